"""Pictures of a stylisation sequence: the steps as PNGs, a strip and a GIF (:func:`save_sequence`), and the
labelled grid a finished training run draws (:func:`save_sequence_picture`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from agents.files import atomic_path
from agents.inference.runners import stylize_sequence
from agents.style_sac import StyleSAC
from nst_env.images import load_image, resolve_sample

#: Fixed (content, style) pairs of the built-in samples used for the sequence picture.
EVAL_PAIRS = (("chelsea", "starry_night"), ("astronaut", "the_scream"), ("building", "great_wave"))


def _label(image: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 7 * len(text) + 6, 14), fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return image


def sequence_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, Sequence[np.ndarray]]], tile: int = 128) -> Image.Image:
    """A grid: one row per pair, columns content | style | step 1 | ... | step k, labelled.

    :param rows: ``(content, style, outputs)`` per row, uint8 ``H x W x 3`` images.
    :param tile: side of each square tile in pixels.
    """
    n_cols = 2 + max(len(outputs) for _, _, outputs in rows)
    grid = Image.new("RGB", (n_cols * tile, len(rows) * tile), (255, 255, 255))
    for r, (content, style, outputs) in enumerate(rows):
        tiles = [(content, "content"), (style, "style")] + [(o, f"step {k}") for k, o in enumerate(outputs, 1)]
        for c, (img, text) in enumerate(tiles):
            grid.paste(
                _label(Image.fromarray(img).resize((tile, tile), Image.Resampling.BICUBIC), text), (c * tile, r * tile)
            )
    return grid


def save_sequence(outputs: Sequence[np.ndarray], out_dir: Path, stem: str, gif_ms: int = 300) -> list[Path]:
    """Write ``stem_step01.png``..., a strip ``stem_strip.png`` and an animated ``stem.gif`` (each atomically).

    :param outputs: the steps' ``H x W x 3`` uint8 images.
    :param out_dir: the output folder (created).
    :param stem: the files' name stem.
    :param gif_ms: display time of each GIF frame in milliseconds.
    :return: the files written: the steps', the strip and the GIF.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(o) for o in outputs]
    strip = Image.new("RGB", (sum(f.width for f in frames), frames[0].height))
    x = 0
    for frame in frames:
        strip.paste(frame, (x, 0))
        x += frame.width
    paths = [out_dir / f"{stem}_step{k:02d}.png" for k in range(1, len(frames) + 1)]
    for path, frame in zip(paths, frames):
        with atomic_path(path) as partial:
            frame.save(partial)
    paths.append(out_dir / f"{stem}_strip.png")
    with atomic_path(paths[-1]) as partial:
        strip.save(partial)
    paths.append(out_dir / f"{stem}.gif")
    with atomic_path(paths[-1]) as partial:
        frames[0].save(partial, save_all=True, append_images=frames[1:], duration=gif_ms, loop=0)
    return paths


def save_sequence_picture(
    model: StyleSAC, path: Path, steps: int = 10, side: int = 256, style: str | None = None
) -> Path:
    """The 1..``steps`` sequence of the fixed evaluation pairs as one labelled grid PNG.

    :param model: the trained model.
    :param path: the PNG to write.
    :param steps: stylisation steps (columns after content and style).
    :param side: longest side of the images processed.
    :param style: the style the model was trained on, when pinned (single-style training): it replaces the
        evaluation pairs' styles.
    """
    rows = []
    for content, pair_style in EVAL_PAIRS:
        c = load_image(resolve_sample(content), max_side=side)
        s = load_image(resolve_sample(style or pair_style), max_side=side)
        rows.append((c, s, stylize_sequence(model.policy, c, s, steps)))
    with atomic_path(path) as partial:
        sequence_grid(rows).save(partial)
    return path
