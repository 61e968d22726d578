"""Stylise images step by step: ``python -m agents.stylize --content C --style S [--steps 10] [--out DIR]``.

For every (content, style) pair it writes one PNG per step at the content image's own size, a strip of all
steps and an animated GIF. ``--content`` and ``--style`` take files or folders (every pair is processed).
Without ``--model`` it uses the authors' released RLMiniStyler weights, shipped with the package.

Images too large for the memory at hand are processed at the largest size that fits (with a note) and the
outputs are resized back to the content's size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

from agents.inference import save_sequence, stylize_sequence
from agents.models import ModelLoadError, load_policy
from nst_env.images import ImageReadError, load_image, resize, scan_folder
from nst_env.style_transfer import resolve_device, resolve_sample

#: Approximate peak bytes per content pixel of one actor + builder step in float32 (measured with
#: benchmarks at 512-2048 px, rounded up).
BYTES_PER_PIXEL = 600


def image_list(spec: str) -> list[Path]:
    """A file, a built-in sample name, or every image in a folder."""
    path = Path(str(resolve_sample(spec)))
    if path.is_dir():
        return scan_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such image or folder: {spec}")
    return [path]


def memory_budget(device: torch.device) -> int:
    """Bytes one stylisation may use: half of what is free on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return psutil.virtual_memory().available // 2


def fit_to_memory(image: np.ndarray, budget: int, max_side: int | None) -> np.ndarray:
    """Shrink ``image`` (keeping its aspect) so that a step fits ``budget`` bytes and ``max_side``."""
    h, w = image.shape[:2]
    scale = min(1.0, (budget / (BYTES_PER_PIXEL * h * w)) ** 0.5)
    if max_side:
        scale = min(scale, max_side / max(h, w))
    if scale >= 1.0:
        return image
    return resize(image, max(4, int(w * scale)), max(4, int(h * scale)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="StyleSAC .zip, or a released model name (default: rlministyler)")
    p.add_argument("--content", required=True, help="content image, folder of images, or built-in name")
    p.add_argument("--style", required=True, help="style image, folder of images, or built-in name")
    p.add_argument("--steps", type=int, default=10, help="stylisation steps")
    p.add_argument("--out", default="stylized", help="output folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--max-side", type=int, default=None, help="process at most this long a side (outputs are resized back)")
    p.add_argument("--sample", action="store_true", help="sample latents instead of using the distribution mean")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}.")
        contents, styles = image_list(args.content), image_list(args.style)
        device = resolve_device(args.device)
        policy = load_policy(args.model, device)
    except (FileNotFoundError, ValueError, ModelLoadError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    failures = 0
    for content_path in tqdm(contents, desc="content", disable=len(contents) * len(styles) == 1):
        for style_path in styles:
            try:
                content = load_image(content_path)
                style = load_image(style_path, max_side=1024)
                work = fit_to_memory(content, memory_budget(device), args.max_side)
                if work.shape != content.shape:
                    print(f"note: {content_path.name} is processed at {work.shape[1]}x{work.shape[0]} to fit memory "
                          f"or --max-side, then resized back to {content.shape[1]}x{content.shape[0]}.")
                outputs = stylize_sequence(policy, work, style, args.steps, deterministic=not args.sample)
                outputs = [resize(o, content.shape[1], content.shape[0]) for o in outputs]
                paths = save_sequence(outputs, out_dir, f"{content_path.stem}__{style_path.stem}")
                print(f"{content_path.name} x {style_path.name}: {len(outputs)} steps -> {paths[-2]}")
            except (ImageReadError, FileNotFoundError, ValueError, torch.cuda.OutOfMemoryError, MemoryError) as exc:
                failures += 1
                print(f"error: {content_path.name} x {style_path.name}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
