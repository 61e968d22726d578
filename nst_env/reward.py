"""The reward pass of ``NST-v0`` and its batched env: a frozen VGG-19 and the losses it gives, for any batch."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from nst_env.losses import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    StyleStats,
    content_loss,
    content_style_layers,
    style_loss,
    style_statistics,
)
from nst_env.vgg import VGG19Features

#: The reward pass's precisions: ``"bfloat16"`` runs VGG-19 under :func:`torch.autocast` (the losses are summed in
#: float32 either way).
PRECISIONS = ("float32", "bfloat16")
#: On the CPU the reward pass runs VGG-19 on chunks of at most this many pixels (and at least one image): a larger
#: batch was slower per image there (``benchmarks/results/env_throughput_unchunked/``: one 128 px image per pass,
#: four at 64 px, were the fastest); on a GPU the whole batch goes in one pass.
CPU_CHUNK_PIXELS = 4 * 64 * 64


class PerceptualReward:
    """The frozen VGG-19 of an env and the losses its reward and ``info`` report, for any batch of images.

    :param style_loss: ``"meanstd"`` or ``"gram"``.
    :param device: where VGG-19 runs.
    :param vgg_weights: explicit VGG-19 weights path (see :mod:`nst_env.vgg`).
    :param precision: ``"float32"``, or ``"bfloat16"`` to run VGG-19 under :func:`torch.autocast`.
    """

    def __init__(
        self,
        style_loss: str,
        device: torch.device,
        vgg_weights: str | os.PathLike | None = None,
        precision: str = "float32",
    ) -> None:
        self.kind = style_loss
        self.style_layers = STYLE_LAYERS[style_loss]
        self.content_layer = CONTENT_LAYER[style_loss]
        self.device = device
        self.precision = precision
        self.vgg = VGG19Features(content_style_layers(style_loss), weights=vgg_weights, device=device)

    def features(self, images: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG-19 activations of ``N x 3 x H x W`` uint8 images (a numpy array, or a tensor on any device); on the
        CPU in chunks of :data:`CPU_CHUNK_PIXELS`.

        :param images: the images.
        """
        batch = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        batch = batch.to(self.device, non_blocking=True).float().div_(255.0)
        bf16 = self.precision == "bfloat16"
        chunk = max(1, CPU_CHUNK_PIXELS // (batch.shape[-2] * batch.shape[-1])) if self.device.type == "cpu" else 0
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if not chunk or len(batch) <= chunk:
                return self.vgg(batch)
            parts = [self.vgg(part) for part in batch.split(chunk)]
            return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def targets(
        self, content: Mapping[str, torch.Tensor], style: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, StyleStats]:
        """An episode's targets: the content photos' content-layer features and the style images' statistics.

        :param content: the content photos' activations.
        :param style: the style images' activations.
        """
        return content[self.content_layer], style_statistics(style, self.kind, self.style_layers)

    def losses(
        self, features: Mapping[str, torch.Tensor], style_target: StyleStats, content_target: torch.Tensor
    ) -> torch.Tensor:
        """``2 x N`` float32: each image's style loss (first row) and content loss (second row).

        :param features: the images' activations.
        :param style_target: the style statistics each image is compared with (batch ``N`` or 1).
        :param content_target: the content features each image is compared with (batch ``N`` or 1).
        """
        with torch.no_grad():
            style = style_loss(features, style_target, self.kind, reduction="none")
            content = content_loss(features[self.content_layer], content_target, reduction="none")
            return torch.stack([style, content])
