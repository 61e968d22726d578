"""One photo's whole stylisation sequence for the web app (:mod:`agents.inference.app`): the uploads read, the
steps run, scored and written, and one click's values turned into a sequence or one message.

:func:`compute_sequence` runs a sequence as ``agents.stylize`` does (the runner of
:func:`~agents.inference.backends.make_runner`, the style read and encoded once as the command reads and encodes
it, the photo fitted to the memory and to the processing size by :mod:`agents.inference.fitting`, the steps
resized back to the photo's size and written by :func:`~agents.inference.pictures.save_sequence`), so both give
the same pixels, and writes into a folder of its own; :meth:`StepSequence.score` then scores each step
(:mod:`agents.inference.quality`). A bad input raises with a message naming it; :func:`run_request` turns that into
the one message the page shows.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from agents.errors import one_line
from agents.inference.backends import make_runner
from agents.inference.fitting import DEFAULT_STYLE_SIZE, STYLE_MAX_SIDE, fit_to_memory, fits_memory, memory_budget
from agents.inference.models import RELEASED, load_policy, released_style_image
from agents.inference.pictures import save_sequence
from agents.inference.quality import SSIM_WINDOW, StepQuality, ssim
from agents.inference.runners import MIN_SIDE, StepRunner, StyleEncodings, stylize_sequence
from nst_env.images import DEFAULT_MAX_PIXELS, ImageReadError, load_image, resize
from nst_env.utils import resolve_device

log = logging.getLogger(__name__)

#: The processing size when the page leaves it at 0: the photo's longer side, at most this (docs/app.md says why).
SIZE_CAP = 512
#: Photos with a longer side above this are read at this side (a note says so); the downloads have its size.
MAX_PHOTO_SIDE = 4096
#: Images declaring more pixels than this are refused before they are decoded, as by ``agents.stylize`` (the page
#: caps an upload's bytes too).
MAX_PIXELS = DEFAULT_MAX_PIXELS
#: The steps slider's default and largest value.
DEFAULT_STEPS = 10
MAX_STEPS = 50
#: Longer side of the gallery's thumbnails.
THUMBNAIL_SIDE = 192


#: What a bad request raises (a missing, unreadable or oversized file, a model that is no model, a value out of
#: range, too little memory): the page shows its message. Anything else is a bug, logged with its traceback.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    MemoryError,
    torch.cuda.OutOfMemoryError,
)


class AppInputError(ValueError):
    """A request the page cannot run: a missing input, a value out of range, a model path the page may not open."""


@dataclass
class StepScore:
    """How far one step has gone (step 0: the photo itself)."""

    step: int  #: the step (0: the photo)
    style_loss: float  #: style loss against the painting (``nan`` without a style image)
    ssim: float  #: SSIM against the photo (``nan`` for images under 7 px)


@dataclass
class StepSequence:
    """One computed sequence: its files (in :attr:`folder`), its scores and what the page should say about it."""

    folder: Path  #: the run's own folder (removed with :meth:`remove`)
    steps: list[Path]  #: step 1..N as PNGs at the photo's size (as ``agents.stylize`` writes them)
    strip: Path  #: all steps side by side (PNG)
    gif: Path  #: the steps as an animated GIF
    thumbnails: list[Path]  #: small JPEGs of the steps, for the gallery
    photo: Path  #: the photo as read (PNG)
    painting: Path | None  #: the style image as read (PNG; ``None``: a single-style model without one)
    size: tuple[int, int]  #: the photo's (and the outputs') width and height
    work_size: tuple[int, int]  #: the width and height the steps ran at
    seconds: float  #: the time the steps took
    engine: str  #: what ran them: ``"PyTorch"`` or ``"ONNX Runtime"``
    #: the photo and the steps at the size they ran at (what :meth:`score` measures)
    images: list[np.ndarray] = field(default_factory=list, repr=False)
    #: the style image as read (``None``: a single-style model without one)
    painting_image: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  #: what was done to the inputs, one sentence each
    scores: list[StepScore] = field(default_factory=list)  #: step 0 (the photo) to N, once :meth:`score` ran

    def score(self, quality: StepQuality, progress: Callable[[float, str], None] | None = None) -> list[StepScore]:
        """Score the photo and every step (:attr:`scores`; computed once): style loss against the painting (``nan``
        without one) and SSIM against the photo, at the size the steps ran at.

        :param quality: what measures the style loss.
        :param progress: called with the fraction done and a description.
        """
        if not self.scores:
            target = None if self.painting_image is None else quality.style_target(self.painting_image)
            for k, image in enumerate(self.images):
                if progress is not None:
                    progress(k / len(self.images), f"scoring step {k}")
                loss = math.nan if target is None else quality.style_loss(image, target)
                self.scores.append(StepScore(k, loss, ssim(self.images[0], image)))
        return self.scores

    def remove(self) -> None:
        """Delete the run's folder (the page has served its files from Gradio's cache)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class ModelCache:
    """Step runners of the models the page asks for, each loaded once (the ``keep`` most recent are kept).

    :param device: where the models run (``"auto"``: CUDA when available).
    :param backend: ``auto``, ``torch`` or ``onnx`` (:func:`~agents.inference.backends.make_runner`).
    :param onnx_cache: the folder of exported models (default: the backends' own).
    :param keep: how many loaded models to keep.
    """

    def __init__(
        self, device: str = "auto", backend: str = "auto", onnx_cache: Path | None = None, keep: int = 3
    ) -> None:
        self.device = resolve_device(device)
        self.backend, self.onnx_cache, self.keep = backend, onnx_cache, keep
        self._runners: OrderedDict[str, StepRunner] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str) -> StepRunner:
        """The runner of ``model``, loaded on first use.

        :param model: one of :data:`~agents.inference.models.RELEASED` or a model file's path.
        :raises ModelLoadError: a missing, corrupt or incompatible model (from
            :func:`~agents.inference.models.load_policy`).
        """
        with self._lock:
            if model not in self._runners:
                policy = load_policy(model, self.device)
                self._runners[model] = make_runner(policy, self.backend, self.onnx_cache)
                while len(self._runners) > self.keep:
                    self._runners.popitem(last=False)
            self._runners.move_to_end(model)
            return self._runners[model]


def _mode_note(mode: str, what: str) -> str | None:
    """What reading an image of Pillow mode ``mode`` does to it, or ``None`` for plain RGB."""
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return f"The {what} has 16-bit or float values: they are rescaled to 8 bits."
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return f"The {what} has transparency: it is composited on white."
    if mode in ("L", "1"):
        return f"The {what} is grayscale: it is stylised as a colour image."
    return None


def read_image(
    path: Path, name: str, what: str, max_side: int | None = None, shrink_above: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """An uploaded image read by :func:`~nst_env.images.load_image` as ``agents.stylize`` reads it, and notes on
    what was done to it.

    :param path: the file.
    :param name: what the user calls it (the upload's own file name), for the messages.
    :param what: ``"photo"`` or ``"painting"``, for the messages.
    :param max_side: ``load_image``'s ``max_side`` (``None``: the image's own size).
    :param shrink_above: read an image with a longer side above this at this side instead, with a note.
    :raises ImageReadError: a file that is not an image, a damaged one, or one declaring more than :data:`MAX_PIXELS`.
    """

    def named(exc: BaseException) -> str:
        return one_line(str(exc).replace(str(path), name))

    width = height = 0
    mode = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # the header only
                width, height, mode = img.width, img.height, img.mode
                if mode == "P" and "transparency" in img.info:
                    mode = "PA"
    except Image.DecompressionBombError:
        pass  # far too large: load_image says so
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"The {what} {name} is not an image this app can read ({named(exc)}).") from exc
    shrink = shrink_above is not None and max(width, height) > shrink_above
    try:
        image = load_image(path, max_side=shrink_above if shrink else max_side, max_pixels=MAX_PIXELS)
    except (ImageReadError, OSError) as exc:
        raise ImageReadError(f"The {what} {name} cannot be read ({named(exc)}).") from exc
    notes = [note] if (note := _mode_note(mode, what)) else []
    if shrink:
        notes.append(
            f"The {what} is {width}x{height}: it is read at {image.shape[1]}x{image.shape[0]} (this app reads "
            f"at most {shrink_above} px a side)."
        )
    return image, notes


def processing_side(photo: np.ndarray, size: int | None, cap: int = SIZE_CAP) -> int:
    """The longest side the steps run at: ``size``, or without it (0 or ``None``) the photo's, at most ``cap``.

    :param photo: the ``H x W x 3`` photo.
    :param size: the processing size asked for (px, the longer side).
    :param cap: the default's limit.
    """
    return int(size) if size else min(max(photo.shape[:2]), cap)


def _save_png(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)
    return path


def _thumbnail(path: Path, out: Path) -> Path:
    with Image.open(path) as img:
        img.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        img.convert("RGB").save(out, quality=90)
    return out


class _ReportingRunner:
    """A runner that calls ``report(step)`` after each step it runs (the page's progress bar).

    :param runner: the runner that computes.
    :param report: called with the 1-based step just done.
    """

    def __init__(self, runner: StepRunner, report: Callable[[int], None]) -> None:
        self.runner, self.report = runner, report
        self.device, self.needs_style_image = runner.device, runner.needs_style_image

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def step(self, moving: Any, style: Any, frame: int, step: int, deterministic: bool) -> Any:
        """:meth:`StepRunner.step <agents.inference.runners.StepRunner.step>`, then the report (same arguments)."""
        moving = self.runner.step(moving, style, frame, step, deterministic)
        self.report(step + 1)
        return moving


def compute_sequence(
    models: ModelCache,
    photo: Path,
    style: Path | None,
    model: str,
    out_dir: Path,
    steps: int = DEFAULT_STEPS,
    size: int | None = None,
    quality: StepQuality | None = None,
    names: tuple[str, str] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> StepSequence:
    """Stylise ``photo`` for ``steps`` steps as ``agents.stylize --max-side SIDE`` does, where ``SIDE`` is
    :func:`processing_side`, score every step and write the files into ``out_dir``.

    :param models: where the model's runner comes from.
    :param photo: the content photo.
    :param style: the style image (ignored by a single-style model, which uses its own where it has one).
    :param model: the model's name or file (the cache's key).
    :param out_dir: an empty folder for the run's files.
    :param steps: how many steps to run (1 to :data:`MAX_STEPS`).
    :param size: the processing size (longest side in px, at least the networks' smallest; 0 or ``None``: the
        photo's own, at most :data:`SIZE_CAP`).
    :param quality: what scores the steps (``None``: they are not scored yet; :meth:`StepSequence.score`).
    :param names: what the user calls the photo and the style (their uploads' file names; default: the paths'),
        for the messages and the files' names.
    :param progress: called with the fraction done and a description, as the work goes on.
    :raises AppInputError: a missing input, or steps or size out of range.
    :raises ImageReadError: an image that cannot be read (:func:`read_image`).
    :raises ModelLoadError: a model that cannot be loaded.
    """
    report = progress or (lambda fraction, text: None)
    photo_name, style_name = names or (photo.name, style.name if style is not None else "")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise AppInputError(f"Steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}.")
    if size is not None and size != 0 and not (isinstance(size, int) and MIN_SIDE <= size <= MAX_PHOTO_SIDE):
        raise AppInputError(
            f"The processing size must be 0 (the photo's, at most {SIZE_CAP} px) or from {MIN_SIDE} to "
            f"{MAX_PHOTO_SIDE} px, got {size!r}."
        )
    content, notes = read_image(photo, photo_name, "photo", shrink_above=MAX_PHOTO_SIDE)
    report(0.0, f"loading {model}")
    runner = models.get(model)
    painting_path = style
    if not runner.needs_style_image:
        painting_path = released_style_image(model)
        given = f" (the painting given, {style_name}, is not used)" if style is not None else ""
        own = "its own style" if painting_path else "its own style, whose image was not published (no style loss)"
        notes.append(f"{model} is a single-style model: it paints {own}{given}.")
        style_name = Path(model.split(":")[-1]).stem
    elif style is None:
        raise AppInputError(f"Choose a painting: {model} stylises with any style image.")
    painting = None
    if painting_path is not None:
        painting, style_notes = read_image(painting_path, style_name, "painting", max_side=STYLE_MAX_SIDE)
        notes += style_notes
    encodings = (
        StyleEncodings(runner, painting, DEFAULT_STYLE_SIZE, STYLE_MAX_SIDE) if runner.needs_style_image else None
    )

    side = processing_side(content, size)
    budget = memory_budget(runner.device)
    work = fit_to_memory(content, budget, side)
    height, width = content.shape[:2]
    if work.shape != content.shape:
        reason = "the processing size" if fits_memory(content, budget) else "the largest size that fits the memory"
        notes.append(f"Processed at {work.shape[1]}x{work.shape[0]} ({reason}), then resized back to {width}x{height}.")
    if min(height, width) < MIN_SIDE:
        notes.append(
            f"The photo ({width}x{height}) is smaller than the networks take: it is processed at least {MIN_SIDE} px "
            "a side, then resized back."
        )
    if min(work.shape[:2]) < SSIM_WINDOW:
        notes.append(f"No SSIM: the photo is processed under {SSIM_WINDOW} px a side.")

    units = steps + 1  # the steps and the files
    reporting = _ReportingRunner(runner, lambda k: report(k / units, f"step {k} of {steps}"))
    start = time.perf_counter()
    outputs = stylize_sequence(reporting, work, encodings, steps)
    seconds = time.perf_counter() - start

    report((units - 1) / units, "writing the files")
    stem = f"{Path(photo_name).stem}__{Path(style_name).stem}" if style_name else Path(photo_name).stem
    full = [resize(image, width, height) for image in outputs]
    files = save_sequence(full, out_dir, stem)
    sequence = StepSequence(
        folder=out_dir,
        steps=files[:-2],
        strip=files[-2],
        gif=files[-1],
        thumbnails=[_thumbnail(p, out_dir / f"thumb{k:02d}.jpg") for k, p in enumerate(files[:-2], 1)],
        photo=_save_png(content, out_dir / "photo.png"),
        painting=None if painting is None else _save_png(painting, out_dir / "painting.png"),
        size=(width, height),
        work_size=(work.shape[1], work.shape[0]),
        seconds=seconds,
        engine="ONNX Runtime" if type(runner).__name__ == "OnnxRunner" else "PyTorch",
        images=[work, *outputs],
        painting_image=painting,
        notes=notes,
    )
    if quality is not None:
        sequence.score(quality)
    return sequence


def describe(sequence: StepSequence, model: str) -> str:
    """The page's status after a run: what ran, how fast, and the notes (Markdown).

    :param sequence: the run.
    :param model: the model's name as the user knows it.
    """
    n, (width, height) = len(sequence.steps), sequence.work_size
    steps = f"{n} step{'s' if n > 1 else ''}"
    done = (
        f"**Done:** {steps} of {model} ({sequence.engine}) at {width}x{height} in {sequence.seconds:.1f} s "
        f"({sequence.seconds / n:.2f} s a step). Drag the slider to pick a step."
    )
    return "\n".join([done, *(f"- {note}" for note in sequence.notes)])


def upload_path(payload: Any) -> tuple[Path, str] | None:
    """``(path, original name)`` of an un-preprocessed Gradio file value (a ``FileData`` dict), or ``None``."""
    if not payload:
        return None
    if isinstance(payload, (str, Path)):
        return Path(payload), Path(payload).name
    path = payload.get("path")
    if not path:
        return None
    return Path(path), payload.get("orig_name") or Path(path).name


def request_model(choice: Any, upload: Any, allow_paths: bool) -> str:
    """The model a request names: an uploaded model file, else the drop-down's choice.

    :param choice: the drop-down's value (a shipped model's name, or with ``allow_paths`` a model file's path).
    :param upload: the uploaded model file (a Gradio file value) or ``None``.
    :param allow_paths: whether the page may open a model file by the path typed in.
    :raises AppInputError: a path typed in where ``allow_paths`` is off, or no model at all.
    """
    uploaded = upload_path(upload)
    if uploaded is not None:
        return str(uploaded[0])
    choice = str(choice or "").strip()
    if not choice:
        raise AppInputError("Choose a model.")
    if choice not in RELEASED and not allow_paths:
        raise AppInputError(f"Unknown model {choice!r}: choose one of {', '.join(RELEASED)} or upload a model.zip.")
    return choice


def _whole(value: Any, what: str) -> int:
    """A number from the page as an int (a slider or number box may send a float)."""
    try:
        number = float(value if value is not None else 0)
    except (TypeError, ValueError):
        raise AppInputError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise AppInputError(f"{what} must be a whole number, got {value!r}.")
    return int(number)


def run_request(
    models: ModelCache,
    work_dir: Path,
    photo: Any,
    style: Any,
    model: Any,
    model_file: Any,
    steps: Any,
    size: Any,
    quality: StepQuality | None = None,
    allow_paths: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[StepSequence | None, str]:
    """One click on the page's *Stylise*: the sequence of the page's values (:func:`compute_sequence`, in a new
    folder under ``work_dir``) and the status to show, or ``None`` and one message naming what was wrong.

    :param models: the runners.
    :param work_dir: the folder of the sessions' folders.
    :param photo: the photo (a Gradio file value, or a path).
    :param style: the painting (a Gradio file value, a path, or ``None``).
    :param model: the drop-down's value (:func:`request_model`).
    :param model_file: an uploaded model file (a Gradio file value) or ``None``.
    :param steps: the steps slider's value.
    :param size: the processing-size box's value.
    :param quality: what scores the steps.
    :param allow_paths: whether the drop-down may name a model file by its path.
    :param progress: called with the fraction done and a description.
    """
    try:
        photo_upload, style_upload = upload_path(photo), upload_path(style)
        if photo_upload is None:
            raise AppInputError("Choose a photo: upload one or click a sample.")
        name = request_model(model, model_file, allow_paths)
        uploaded_model = upload_path(model_file)
        work_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=work_dir))
        try:
            sequence = compute_sequence(
                models,
                photo_upload[0],
                style_upload[0] if style_upload else None,
                name,
                folder,
                _whole(steps, "Steps"),
                _whole(size, "The processing size"),
                quality,
                (photo_upload[1], style_upload[1] if style_upload else ""),
                progress,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    except REQUEST_ERRORS as exc:  # named by the uploads' own names, not Gradio's copies of them
        text = one_line(exc)
        for upload in filter(None, (upload_path(photo), upload_path(style), upload_path(model_file))):
            text = text.replace(str(upload[0]), upload[1])
        return None, f"**Error:** {text}"
    except Exception as exc:  # a bug: said on the page, the traceback in the server's log
        log.exception("the stylisation failed")
        return None, f"**Error:** the stylisation failed ({one_line(exc)}); the server's log has the details."
    return sequence, describe(sequence, uploaded_model[1] if uploaded_model else name)
