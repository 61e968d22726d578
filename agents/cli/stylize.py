"""Stylise images or a video step by step: ``python -m agents.stylize --content C --style S [--steps 10]``.

For every (content, style) pair it writes one PNG per step at the photo's own size, a strip and a GIF; ``--video``
writes one video per listed step. The model defaults to :data:`~agents.inference.models.DEFAULT_MODEL`, the
backend to ONNX Runtime where the model exports (:mod:`agents.inference.backends`), the style's encoding size to
the photo's (``--style-size content``). Images too large for the memory at hand are processed at the largest
size that fits, with a note. A bad input is one line on stderr and exit status 2; outputs are written atomically.
Flags and examples: docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from agents.cli import UsageError, cli_main, device_name, fail, int_range, int_range_or_none
from agents.errors import one_line
from agents.files import atomic_path
from agents.inference.allocator import keep_freed_memory
from agents.inference.backends import BACKENDS, make_runner
from agents.inference.fitting import DEFAULT_STYLE_SIZE, STYLE_MAX_SIDE, fit_to_memory, memory_budget
from agents.inference.models import DEFAULT_MODEL, RELEASED, load_policy, released_style_image
from agents.inference.onnx import CACHE_ENV
from agents.inference.pictures import save_sequence
from agents.inference.runners import (
    MATCH_CONTENT,
    MIN_SIDE,
    FrameStylizer,
    StepRunner,
    StyleEncodings,
    StyleSize,
    stylize_sequence,
)
from agents.style_sac import ActorBuilderPolicy
from nst_env.images import DEFAULT_MAX_PIXELS, ImageReadError, load_image, resize, resolve_sample, scan_folder
from nst_env.utils import resolve_device
from nst_env.video import (
    FOURCC,
    VideoProperties,
    VideoReadError,
    iter_video_frames,
    open_video_writer,
    video_properties,
)

#: Most steps ``--steps`` takes (each step costs a full network pass).
MAX_STEPS = 1000


def image_list(spec: str) -> list[Path]:
    """A file, a built-in sample name, or every image in a folder.

    :param spec: the ``--content`` or ``--style`` argument.
    :raises ValueError: an empty argument (``Path("")`` is the current folder: every image below it).
    """
    if not spec.strip():
        raise ValueError("expected an image, a folder of images or a built-in name, got an empty argument.")
    path = Path(str(resolve_sample(spec)))
    if path.is_dir():
        return scan_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such image or folder: {spec}")
    return [path]


def style_list(spec: str | None, model: str | None, policy: ActorBuilderPolicy) -> list[tuple[str, Path | None]]:
    """``(name, image)`` of each style to process: ``--style``, or for a single-style model without it, the
    model's own style (its shipped image where there is one; outputs are named after it).

    :param spec: the ``--style`` argument.
    :param model: the ``--model`` argument.
    :param policy: the loaded policy.
    :raises ValueError: an arbitrary-style model without ``--style``.
    """
    if spec is not None:
        return [(path.stem, path) for path in image_list(spec)]
    if policy.needs_style_image:
        raise ValueError(f"--style is required: {model or DEFAULT_MODEL} stylises with any style image.")
    return [(Path(str(model).split(":")[-1]).stem, released_style_image(str(model)))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"StyleSAC .zip, or a shipped model's name: {', '.join(RELEASED)} (default: {DEFAULT_MODEL}, ours, "
        "fine-tuned from the authors' rlministyler; see agents/pretrained/rlministyler_ft128/README.md)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--content", help="content image, folder of images, or built-in name")
    source.add_argument("--video", help="video file to stylise frame by frame (OpenCV reads it)")
    p.add_argument(
        "--style",
        default=None,
        help="style image, folder of images, or built-in name (single-style models: optional, names the outputs)",
    )
    p.add_argument(
        "--steps",
        type=int_range(1, MAX_STEPS),
        nargs="+",
        default=[10],
        help="images: steps to run (all are saved; the largest counts); video: one output per step",
    )
    p.add_argument("--out", default="stylized", help="output folder")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, ...")
    p.add_argument(
        "--max-side",
        type=int_range(MIN_SIDE),
        default=None,
        help="process at most this long a side (outputs are resized back)",
    )
    p.add_argument(
        "--style-size",
        type=style_size_argument,
        default=DEFAULT_STYLE_SIZE,
        help="encode the style with its longer side at the photo's (content), this many px, or as read (0 or none)",
    )
    p.add_argument(
        "--max-pixels",
        type=int_range(1),
        default=DEFAULT_MAX_PIXELS,
        help="refuse an image that declares more pixels (decompression bombs); raise it for a larger photo",
    )
    p.add_argument("--sample", action="store_true", help="sample latents instead of using the distribution mean")
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: ONNX Runtime where the model exports, else PyTorch"
    )
    p.add_argument(
        "--onnx-cache", type=Path, default=None, help=f"exported models' folder (default: ${CACHE_ENV} or ~/.cache)"
    )
    p.add_argument("--half", action="store_true", help="PyTorch in float16 (CUDA only)")
    return p.parse_args(argv)


def fitted(image: np.ndarray, name: str, device: torch.device, max_side: int | None) -> np.ndarray:
    """``image`` shrunk to fit the memory and ``--max-side`` (:func:`fit_to_memory`), with a note if it was.

    :param image: ``H x W x 3`` uint8.
    :param name: what to call it in the note.
    :param device: where the steps run.
    :param max_side: the ``--max-side`` argument.
    """
    work = fit_to_memory(image, memory_budget(device), max_side)
    if work.shape != image.shape:
        print(
            f"note: {name} is processed at {work.shape[1]}x{work.shape[0]} to fit memory or --max-side, then "
            f"resized back to {image.shape[1]}x{image.shape[0]}."
        )
    return work


def stylize_image_file(
    runner: StepRunner, path: Path, style: StyleEncodings | None, stem: str, args: argparse.Namespace
) -> str:
    """Write one PNG per step (up to ``max(--steps)``), a strip and a GIF for one content image.

    :param runner: what runs the steps (PyTorch or ONNX Runtime).
    :param path: the content image.
    :param style: the style, encoded as ``--style-size`` asks (``None`` for a single-style model).
    :param stem: the outputs' file-name stem.
    :param args: the parsed command line (``steps``, ``out``, ``device``, ``max_side``, ``max_pixels``,
        ``sample``).
    :return: what was written, for the log.
    """
    content = load_image(path, max_pixels=args.max_pixels)
    work = fitted(content, path.name, runner.device, args.max_side)
    if min(content.shape[:2]) < MIN_SIDE:
        print(
            f"note: {path.name} ({content.shape[1]}x{content.shape[0]}) is smaller than the networks take: it is "
            f"processed at least {MIN_SIDE} px a side, then resized back."
        )
    outputs = stylize_sequence(runner, work, style, max(args.steps), deterministic=not args.sample)
    outputs = [resize(o, content.shape[1], content.shape[0]) for o in outputs]
    paths = save_sequence(outputs, Path(args.out), stem)
    return f"{len(outputs)} steps -> {paths[-2]}"


def stylize_video_file(
    runner: StepRunner, path: Path, style: StyleEncodings | None, stem: str, args: argparse.Namespace
) -> str:
    """Write one video per requested step, with the input's frame count, frame size and frame rate.

    Decoded frames are stylised once; a frame the container shows several times (empty "repeat" entries,
    see :func:`~nst_env.video.iter_video_frames`) is written as often. The codec follows the input's file
    ending where OpenCV can write it (:data:`~nst_env.video.FOURCC`), else MPEG-4 in ``.mp4``. The videos are
    written under temporary names and renamed once complete (removed when the input fails part way).

    :param runner: what runs the steps (PyTorch or ONNX Runtime).
    :param path: the input video.
    :param style: the style, encoded as ``--style-size`` asks (``None`` for a single-style model).
    :param stem: the outputs' file-name stem.
    :param args: the parsed command line (``steps``, ``out``, ``device``, ``max_side``, ``sample``).
    :return: what was written, for the log.
    """
    properties = video_properties(path)
    suffix = path.suffix.lower() if path.suffix.lower() in FOURCC else ".mp4"
    out_dir = Path(args.out)
    stylizer = FrameStylizer(runner, style, args.steps, deterministic=not args.sample)
    paths = {step: out_dir / f"{stem}_step{step:02d}{suffix}" for step in stylizer.steps}
    with ExitStack() as stack:
        partial = {step: stack.enter_context(atomic_path(p)) for step, p in paths.items()}
        frames = write_video(stylizer, path, properties, partial, args.max_side)
    return f"{frames} frames, steps {stylizer.steps} -> {', '.join(str(p) for p in paths.values())}"


def write_video(
    stylizer: FrameStylizer, path: Path, properties: VideoProperties, paths: dict[int, Path], max_side: int | None
) -> int:
    """Stylise every frame of a video and write one video per kept step.

    :param stylizer: the frame stylizer (its runner, style and steps).
    :param path: the input video.
    :param properties: the input's frame count, frame rate and size.
    :param paths: the file to write for each kept step.
    :param max_side: the ``--max-side`` argument.
    :return: the number of frames stylised.
    :raises VideoReadError: a video without a decodable frame.
    """
    writers: dict[int, cv2.VideoWriter] = {}
    pending: dict[int, np.ndarray] = {}
    written = 0

    def write(outputs: dict[int, np.ndarray], times: int) -> int:
        for step, image in outputs.items():
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            for _ in range(times):
                writers[step].write(bgr)
        return times

    try:
        with tqdm(total=max(properties.frame_count, 1), unit="frame", desc=path.name) as bar:
            for index, frame in iter_video_frames(path):
                if not writers:
                    work_size = fitted(frame, path.name, stylizer.runner.device, max_side).shape
                    fps = properties.fps if properties.fps > 0 else 25.0
                    next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
                    writers = {s: open_video_writer(p, fps, frame.shape[1], frame.shape[0]) for s, p in paths.items()}
                if pending:  # the previous frame is shown until this one's position
                    written += write(pending, max(1, index - written))
                    bar.update(written - bar.n)
                work = resize(frame, work_size[1], work_size[0])
                pending = {s: resize(o, frame.shape[1], frame.shape[0]) for s, o in stylizer(work).items()}
            if not pending:
                raise VideoReadError(f"{path} holds no decodable frame.")
            written += write(pending, max(1, properties.frame_count - written))
            bar.update(written - bar.n)
    finally:
        for writer in writers.values():
            writer.release()
    return stylizer.frame


def style_size_argument(text: str) -> StyleSize:
    """``--style-size``: ``content``, ``0`` or ``none`` (as read: ``None``), or an integer from :data:`MIN_SIDE` to
    :data:`STYLE_MAX_SIDE`."""
    if text.strip().lower() == MATCH_CONTENT:
        return MATCH_CONTENT
    try:
        return int_range_or_none(MIN_SIDE, STYLE_MAX_SIDE)(text)
    except argparse.ArgumentTypeError:
        expected = f"{MATCH_CONTENT}, 0, none or an integer from {MIN_SIDE} to {STYLE_MAX_SIDE}"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def load_style(
    runner: StepRunner, path: Path | None, size: StyleSize = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> StyleEncodings | None:
    """A style image read (longest side at most :data:`STYLE_MAX_SIDE`), to be encoded by ``runner`` at ``size``
    (``None`` for a single-style model or without an image).

    :param runner: what runs the steps.
    :param path: the style image.
    :param size: the size it is encoded at (``--style-size``: :data:`~agents.inference.runners.StyleSize`).
    :param max_pixels: refuse a file declaring more pixels (``--max-pixels``; see :func:`~nst_env.images.load_image`).
    """
    if not runner.needs_style_image or path is None:
        return None
    image = load_image(path, max_side=STYLE_MAX_SIDE, max_pixels=max_pixels)
    return StyleEncodings(runner, image, size, STYLE_MAX_SIDE)


#: What makes one (content, style) pair fail while the others go on.
PAIR_ERRORS = (ImageReadError, OSError, ValueError, torch.cuda.OutOfMemoryError, MemoryError)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.stylize``: every (content, style) pair; each style is read and encoded once.

    A pair that fails (an unreadable image, too little memory) is reported in one line and the others go on;
    the exit status is then 2 (bad input before any work, e.g. a missing model: one line, status 2).

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    inputs = [Path(args.video)] if args.video else image_list(args.content)
    if args.video:
        video_properties(inputs[0])  # a missing or unreadable video is reported here
    try:
        policy = load_policy(args.model, resolve_device(args.device))
    except (RuntimeError, AssertionError) as exc:  # e.g. --device cuda on a machine without CUDA
        fail(f"--device {args.device}: {exc}")
    runner = make_runner(policy, args.backend, args.onnx_cache, args.sample, args.half)
    if runner.device.type == "cpu":
        keep_freed_memory()  # process-wide: this command does nothing else (agents.inference.allocator)
    styles = style_list(args.style, args.model, policy)
    if args.style is not None and not policy.needs_style_image:
        print(f"note: {args.model} is a single-style model: --style only names the outputs.")
    stylize_file = stylize_video_file if args.video else stylize_image_file
    failures, total = 0, len(inputs) * len(styles)
    with tqdm(total=total, desc="pairs", disable=total == 1 or bool(args.video)) as bar:
        for style_name, style_path in styles:
            try:
                style = load_style(runner, style_path, args.style_size, args.max_pixels)
            except PAIR_ERRORS as exc:
                failures += len(inputs)
                bar.update(len(inputs))
                print(f"error: style {style_name}: {one_line(exc)}", file=sys.stderr)
                continue
            for input_path in inputs:
                try:
                    message = stylize_file(runner, input_path, style, f"{input_path.stem}__{style_name}", args)
                    print(f"{input_path.name} x {style_name}: {message}")
                except PAIR_ERRORS as exc:
                    failures += 1
                    print(f"error: {input_path.name} x {style_name}: {one_line(exc)}", file=sys.stderr)
                bar.update(1)
    if failures:
        raise UsageError(f"{failures} of {total} (content, style) pairs failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
