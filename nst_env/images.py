"""Reading images of any kind into ``H x W x 3`` uint8 RGB, and folders of them as a data source.

Accepted: anything Pillow reads (JPEG, PNG, BMP, WebP, TIFF, ...) in any mode: grayscale, RGBA (alpha
composited on white), palette, CMYK, 16-bit and float images (rescaled to 8 bits), EXIF-rotated photos (turned
upright), tiny or large ones (large JPEGs are decoded at reduced size when a maximum side is given).

Decompression bombs: :func:`load_image` reads the size a file declares before decoding it and refuses more than
:data:`DEFAULT_MAX_PIXELS` (its ``max_pixels`` raises the bound); Pillow's own guard
(``PIL.Image.MAX_IMAGE_PIXELS``) is left on for the rest of the process.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: File endings the folder scan picks up (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
#: The sample photos and paintings shipped with the package (see ``data/SOURCES.md``).
SAMPLE_DIR = Path(__file__).parent / "data"
SAMPLE_CONTENT_DIR = SAMPLE_DIR / "content"
SAMPLE_STYLE_DIR = SAMPLE_DIR / "style"

ImageLike = Union[str, os.PathLike, np.ndarray]

#: Most pixels :func:`load_image` decodes unless told otherwise (64 megapixels, e.g. 8000 x 8000; an RGB copy of
#: that many is 192 MB): a file declaring more is refused before decoding (a decompression bomb declares a huge
#: size in a small file). JPEGs decoded at reduced size for ``max_side`` count at that size.
DEFAULT_MAX_PIXELS = 64_000_000
#: What a decoder may raise for a damaged file besides ``OSError``/``ValueError`` (Pillow's plugins parse
#: headers with ``struct`` and index into what they read).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file that cannot be decoded (damaged, not an image, larger than the pixel bound), or an array
    that is not an image."""


@contextmanager
def _open(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """``Image.open(path)`` without Pillow's decompression-bomb warning (the caller checks the size), and with
    Pillow's own limit raised to ``max_pixels`` for this call only when the caller asks for more than it.

    :param path: the image file.
    :param max_pixels: the caller's bound (``None``: none besides Pillow's).
    """
    limit = Image.MAX_IMAGE_PIXELS
    raise_limit = limit is not None and max_pixels is not None and max_pixels > limit
    with _PILLOW_LIMIT_LOCK if raise_limit else nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if raise_limit:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with Image.open(path) as img:
                yield img
        finally:
            if raise_limit:
                Image.MAX_IMAGE_PIXELS = limit


def _too_large(path: Path, declared: str, max_pixels: int | None) -> ImageReadError:
    """The error for a file that declares more pixels than accepted (``max_pixels``, or Pillow's limit)."""
    bound = f"the {max_pixels:,} accepted" if max_pixels is not None else "Pillow's limit (PIL.Image.MAX_IMAGE_PIXELS)"
    return ImageReadError(
        f"Image {path} declares {declared}, more than {bound}: a decompression bomb, or a very large photo "
        "(load_image(max_pixels=...) or agents.stylize --max-pixels raises the bound)."
    )


def _check_pixels(path: Path, img: Image.Image, max_pixels: int | None) -> None:
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise _too_large(path, f"{width}x{height} = {width * height:,} pixels", max_pixels)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = arr.max(initial=0.0)
        top = 1.0 if peak <= 1.0 and img.mode == "F" else 255.0 if peak <= 255 else 65535.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def load_image(
    source: ImageLike, max_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read an image file or validate an array, returning ``H x W x 3`` uint8 RGB (EXIF-rotated photos upright).

    :param source: a path, or an array ``H x W x 3`` (also ``H x W`` or ``H x W x 4``) of uint8, or of
        floats in ``[0, 1]``.
    :param max_side: if given, shrink (keeping the aspect ratio) so that the longer side is at most this;
        JPEGs are then decoded directly at reduced resolution, so huge files stay cheap.
    :param max_pixels: refuse a file that declares more pixels than this (after a JPEG's reduction for
        ``max_side``), before decoding it: :data:`DEFAULT_MAX_PIXELS` unless raised. Above Pillow's own limit
        (``PIL.Image.MAX_IMAGE_PIXELS``), that limit is raised for this call only. ``None``: Pillow's limit alone.
    :raises FileNotFoundError: a path that does not exist.
    :raises TypeError: a source that is neither a path nor an array.
    :raises ImageReadError: a file that is not a readable image (damaged, truncated, or larger than
        ``max_pixels``), or an array of the wrong shape or type.
    """
    if isinstance(source, np.ndarray):
        return _validate_array(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Expected an image path or an H x W x 3 array, got {type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    try:
        with _open(path, max_pixels) as img:
            if max_side is not None:
                img.draft("RGB", (max_side, max_side))
            _check_pixels(path, img, max_pixels)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            if max_side is not None and max(img.size) > max_side:
                if img.mode.startswith("I;16"):
                    # thumbnail()'s fast pre-reduction (Image.reduce) rejects 16-bit modes, so a large 16-bit
                    # PNG failed with "image has wrong mode": go to 8-bit RGB first.
                    img = Image.fromarray(_to_rgb(img))
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            rgb = _to_rgb(img)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's guard saw the size first (above twice its limit)
        pixels = str(exc).split("(", 1)[-1].split(" pixels", 1)[0]  # "Image size (N pixels) exceeds limit ..."
        declared = f"{int(pixels):,} pixels" if pixels.isdigit() else "too many pixels"
        raise _too_large(path, declared, max_pixels) from None
    except DECODE_ERRORS as exc:
        raise ImageReadError(f"Cannot read image {path}: {exc}") from exc
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageReadError(f"Image {path} is empty ({rgb.shape[1]}x{rgb.shape[0]}).")
    return np.array(rgb, order="C")  # a writable copy (Pillow's buffers are read-only)


def _validate_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f"Expected an image array of shape H x W x 3 (uint8), got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ImageReadError(f"Expected a uint8 image array (or floats in [0, 1]), got dtype {arr.dtype}.")
        if not np.isfinite(arr).all():
            raise ImageReadError("The image array contains NaN or infinite values.")
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 image with antialiasing (bicubic, or Lanczos-area when shrinking)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width < image.shape[1] and height < image.shape[0]
    method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
    return np.array(Image.fromarray(image).resize((width, height), method))


def resolve_sample(image: ImageLike) -> ImageLike:
    """Map the name of a built-in image (e.g. ``"starry_night"``, ``"chelsea"``) to its path; pass others on."""
    if isinstance(image, str) and not Path(image).exists():
        for folder in (SAMPLE_STYLE_DIR, SAMPLE_CONTENT_DIR):
            for path in folder.iterdir():
                if path.stem == image and path.suffix.lower() in IMAGE_SUFFIXES:
                    return str(path)
    return image


def to_chw(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 -> ``3 x H x W`` uint8."""
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def scan_folder(folder: str | os.PathLike) -> list[Path]:
    """All image files below ``folder`` (recursively, sorted), keeping only those whose header decodes.

    Unreadable files are skipped with a warning that names them.

    :raises FileNotFoundError: the folder does not exist.
    :raises ValueError: the folder holds no usable image.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {root}")
    usable = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        try:
            with _open(path, None):  # parses the header only: cheap even for large datasets
                pass
            usable.append(path)
        except DECODE_ERRORS as exc:
            warnings.warn(f"Skipping unreadable image {path}: {exc}", stacklevel=2)
    if not usable:
        raise ValueError(f"No usable image in {root} (searched recursively for {', '.join(IMAGE_SUFFIXES)}).")
    return usable


class ImagePool:
    """A list of image sources (files or arrays) to draw from; unreadable files are dropped with a warning.

    :param sources: a folder, a single file or array, or a sequence of files/arrays.
    :param max_side: longest side kept after decoding (bounds memory for huge images).
    :param cache: keep decoded images in memory (sensible for small pools such as the built-in samples).
    """

    def __init__(self, sources: ImageLike | Sequence[ImageLike], max_side: int, cache: bool | None = None) -> None:
        if isinstance(sources, (str, os.PathLike)) and Path(sources).is_dir():
            self.items: list[ImageLike] = list(scan_folder(sources))
        elif isinstance(sources, (str, os.PathLike, np.ndarray)):
            if not isinstance(sources, np.ndarray) and not Path(sources).expanduser().is_file():
                # a mistyped content_dir/style_dir/style failed only at the first reset()
                raise FileNotFoundError(f"Image or image folder not found: {Path(sources).expanduser()}")
            self.items = [sources]
        else:
            self.items = list(sources)
        if not self.items:
            raise ValueError("An image pool needs at least one image.")
        self.max_side = max_side
        self.cache_enabled = len(self.items) <= 64 if cache is None else cache
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> np.ndarray:
        """Decoded ``H x W x 3`` uint8 image number ``index``."""
        if index in self._cache:
            return self._cache[index]
        image = load_image(self.items[index], max_side=self.max_side)
        if self.cache_enabled:
            self._cache[index] = image
        return image

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn image; files that fail to decode are dropped (with a warning) and redrawn."""
        while self.items:
            index = int(rng.integers(len(self.items)))
            try:
                return self.get(index)
            except ImageReadError as exc:
                warnings.warn(f"Skipping unreadable image: {exc}", stacklevel=2)
                self.items.pop(index)
                self._cache = {}
        raise ValueError("Every image in the pool failed to decode.")
