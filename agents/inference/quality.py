"""How far each step has gone: its style loss against the painting and its SSIM against the photo.

The two measures of the evaluation protocol (docs/design.md), defined as ``benchmarks.metrics`` defines them, here
for the package itself (the web app's per-step curve, :mod:`agents.inference.app`) without the ``bench`` extra:

- **style loss**: average over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of our VGG-19
  (:class:`nst_env.vgg.VGG19Features`) of MSE(channel means) + MSE(channel stds) between the output and the style
  image, both resized to 256x256 (:func:`nst_env.losses.style_loss`);
- **SSIM**: scikit-image's ``structural_similarity`` with its defaults (a 7x7 uniform window, sample covariances,
  data range 255, the window's border left out) between the grayscale photo and output, computed in float64
  with PyTorch (:func:`ssim`), so scikit-image is not needed.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nst_env.images import resize
from nst_env.losses import StyleStats, style_loss, style_statistics
from nst_env.vgg import VGG19Features

#: Layers of the style loss.
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
#: Side to which output and style image are resized for the style loss.
STYLE_SIDE = 256
#: Side of SSIM's square window (scikit-image's default); smaller images have no SSIM.
SSIM_WINDOW = 7


def grayscale(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 RGB -> ``H x W`` uint8 luma (ITU-R 601-2, Pillow's ``convert("L")``).

    :param image: ``H x W x 3`` uint8 RGB.
    """
    return np.asarray(Image.fromarray(image).convert("L"))


def ssim(content: np.ndarray, output: np.ndarray) -> float:
    """SSIM of the grayscale images, as scikit-image's ``structural_similarity(a, b, data_range=255)``; ``nan``
    for images with a side under :data:`SSIM_WINDOW`.

    :param content: ``H x W x 3`` uint8 photo.
    :param output: ``H x W x 3`` uint8 stylised image of the same size.
    :raises ValueError: images of different shapes.
    """
    if content.shape != output.shape:
        raise ValueError(f"SSIM needs images of the same shape, got {content.shape} and {output.shape}.")
    if min(content.shape[:2]) < SSIM_WINDOW:
        return math.nan
    x, y = (torch.from_numpy(grayscale(image).astype(np.float64))[None, None] for image in (content, output))

    def window_mean(t: torch.Tensor) -> torch.Tensor:  # every window inside the image: the border left out
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    ux, uy = window_mean(x), window_mean(y)
    covariance = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)  # sample covariances
    vx = covariance * (window_mean(x * x) - ux * ux)
    vy = covariance * (window_mean(y * y) - uy * uy)
    vxy = covariance * (window_mean(x * y) - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


class StepQuality:
    """The style loss of stylised images against one style image (see the module docstring).

    :param device: where VGG-19 runs.
    :param vgg_weights: explicit VGG-19 weights (see :func:`nst_env.vgg.load_vgg19_weights`).
    """

    def __init__(self, device: torch.device | str = "cpu", vgg_weights: str | os.PathLike | None = None) -> None:
        self.device = torch.device(device)
        self.vgg = VGG19Features(STYLE_LAYERS, weights=vgg_weights, device=self.device)

    @torch.no_grad()
    def features(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """VGG activations (:data:`STYLE_LAYERS`) of an image resized to :data:`STYLE_SIDE` square.

        :param image: ``H x W x 3`` uint8 (any size).
        """
        square = resize(image, STYLE_SIDE, STYLE_SIDE)
        tensor = torch.from_numpy(np.ascontiguousarray(square)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return self.vgg(tensor)

    def style_target(self, style: np.ndarray) -> StyleStats:
        """The style image's channel statistics, computed once for all outputs.

        :param style: ``h x w x 3`` uint8 style image (any size).
        """
        return style_statistics(self.features(style), "meanstd", STYLE_LAYERS)

    def style_loss(self, output: np.ndarray, target: StyleStats) -> float:
        """The style loss of one output.

        :param output: ``H x W x 3`` uint8 stylised image (any size).
        :param target: :meth:`style_target` of the style image.
        """
        return float(style_loss(self.features(output), target, "meanstd")) / len(STYLE_LAYERS)
