"""How large an image one stylisation step may take: the memory a step needs per pixel, the memory at hand, and
a photo shrunk to fit both and a longest side; and the size a style image is read and encoded at.

``agents.stylize`` (:mod:`agents.cli.stylize`) and the web app (:mod:`agents.inference.sequences`) both use them.
"""

from __future__ import annotations

import numpy as np
import psutil
import torch

from agents.inference.runners import MATCH_CONTENT, MIN_SIDE, StyleSize
from nst_env.images import resize

#: Approximate peak bytes per content pixel of one actor + builder step in float32 (measured with
#: benchmarks at 512-2048 px, rounded up).
BYTES_PER_PIXEL = 600
#: Longest side a style image is decoded and encoded at.
STYLE_MAX_SIDE = 1024
#: The size a style is encoded at by default: the photo's longer side (``agents.stylize --style-size content``).
DEFAULT_STYLE_SIZE: StyleSize = MATCH_CONTENT


def memory_budget(device: torch.device) -> int:
    """Bytes one stylisation may use: half of what is free on ``device``.

    :param device: where the steps run.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return psutil.virtual_memory().available // 2


def fits_memory(image: np.ndarray, budget: int) -> bool:
    """Whether a step on ``image`` at its own size fits ``budget`` bytes.

    :param image: ``H x W x 3`` uint8.
    :param budget: bytes (:func:`memory_budget`).
    """
    return BYTES_PER_PIXEL * image.shape[0] * image.shape[1] <= budget


def fit_to_memory(image: np.ndarray, budget: int, max_side: int | None) -> np.ndarray:
    """Shrink ``image`` (keeping its aspect) so that a step fits ``budget`` bytes and ``max_side``.

    :param image: ``H x W x 3`` uint8.
    :param budget: bytes (:func:`memory_budget`).
    :param max_side: the longest side to process (``None`` or 0: no limit besides the memory).
    """
    h, w = image.shape[:2]
    scale = min(1.0, (budget / (BYTES_PER_PIXEL * h * w)) ** 0.5)
    if max_side:
        scale = min(scale, max_side / max(h, w))
    if scale >= 1.0:
        return image
    return resize(image, max(MIN_SIDE, int(w * scale)), max(MIN_SIDE, int(h * scale)))
