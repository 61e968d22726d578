"""Step-wise stylisation with a trained (or released) actor-builder policy, and pictures of the sequence.

Inference follows the papers: run actor + builder ``steps`` times, feeding each output back as the moving
image; output ``k`` is "sequence k". The latent is the distribution's mean (deterministic) unless asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from agents.style_sac.policies import MiniStylerPolicy


def image_to_tensor(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``1 x 3 x H x W`` float in ``[0, 1]`` on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` (or ``3 x H x W``) float -> ``H x W x 3`` uint8, clamped to ``[0, 1]``."""
    t = tensor.detach().float().clamp(0, 1).squeeze(0).permute(1, 2, 0)
    return (t * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def stylize_sequence(
    policy: MiniStylerPolicy,
    content: np.ndarray,
    style: np.ndarray,
    steps: int = 10,
    deterministic: bool = True,
) -> list[np.ndarray]:
    """The ``steps`` images of the stylisation sequence, each at the content image's own size.

    :param policy: an actor-builder policy (its device is used).
    :param content: ``H x W x 3`` uint8 content photo (any size).
    :param style: ``h x w x 3`` uint8 style image (any size).
    :param steps: how many steps to run.
    :param deterministic: use the latent distribution's mean (the papers' inference).
    :return: ``steps`` uint8 images ``H x W x 3``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    policy.set_training_mode(False)
    device = policy.device
    images = {"moving": image_to_tensor(content, device), "style": image_to_tensor(style, device)}
    outputs = []
    for _ in range(steps):
        _, moving = policy.act(images, deterministic=deterministic)
        outputs.append(tensor_to_image(moving))
        images["moving"] = moving
    return outputs


def _label(image: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 7 * len(text) + 6, 14), fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return image


def sequence_grid(
    rows: Sequence[tuple[np.ndarray, np.ndarray, Sequence[np.ndarray]]], tile: int = 128
) -> Image.Image:
    """A grid: one row per pair, columns content | style | step 1 | ... | step k, labelled.

    :param rows: ``(content, style, outputs)`` per row, uint8 ``H x W x 3`` images.
    :param tile: side of each square tile in pixels.
    """
    n_cols = 2 + max(len(outputs) for _, _, outputs in rows)
    grid = Image.new("RGB", (n_cols * tile, len(rows) * tile), (255, 255, 255))
    for r, (content, style, outputs) in enumerate(rows):
        tiles = [(content, "content"), (style, "style")] + [(o, f"step {k}") for k, o in enumerate(outputs, 1)]
        for c, (img, text) in enumerate(tiles):
            grid.paste(_label(Image.fromarray(img).resize((tile, tile), Image.Resampling.BICUBIC), text), (c * tile, r * tile))
    return grid


def save_sequence(outputs: Sequence[np.ndarray], out_dir: Path, stem: str, gif_ms: int = 300) -> list[Path]:
    """Write ``stem_step01.png``..., a strip ``stem_strip.png`` and an animated ``stem.gif``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(o) for o in outputs]
    paths = []
    for k, frame in enumerate(frames, 1):
        paths.append(out_dir / f"{stem}_step{k:02d}.png")
        frame.save(paths[-1])
    strip = Image.new("RGB", (sum(f.width for f in frames), frames[0].height))
    x = 0
    for frame in frames:
        strip.paste(frame, (x, 0))
        x += frame.width
    paths.append(out_dir / f"{stem}_strip.png")
    strip.save(paths[-1])
    paths.append(out_dir / f"{stem}.gif")
    frames[0].save(paths[-1], save_all=True, append_images=frames[1:], duration=gif_ms, loop=0)
    return paths
