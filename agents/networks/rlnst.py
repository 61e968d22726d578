"""RL-NST's networks: an actor over a 2D latent and a U-Net stylizer, one model per style.

Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023.

- :class:`RLNSTActor` (101,376 parameters): three conv + instance-norm stages and a residual block; the 64
  output channels split into 32 for the mean and 32 for the log-scale, each reduced over channels to a
  1-channel latent ``1 x H/4 x W/4``. Also returns the three encoder stages' features as U-Net skips.
- :class:`RLNSTStylizer` (77,049 parameters): nearest-neighbour upsampling of the latent concatenated with the
  skips back to an image.

Conventions (those of the authors' released weights, see :mod:`agents.networks.pretrained`): inputs are
normalised with the ImageNet mean and std (:func:`normalize_imagenet`) and the stylizer's output is in the
same normalised space (feed it back as is; :func:`denormalize_imagenet` to display). Height and width must
be multiples of 4 (use :func:`~agents.networks.layers.pad_to_multiple`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.networks.layers import ConvNormReLU, NormResidualBlock, ReflectConv2d, squash_log_scale

#: ImageNet channel means and standard deviations (RGB) used by RL-NST's inputs and outputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Encoder skips ``(e1, e2, e3)``: ``N x 16 x H x W``, ``N x 32 x H/2 x W/2``, ``N x 64 x H/4 x W/4``.
Skips = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _imagenet_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return mean, std


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` (``N x 3 x H x W``) to ImageNet-normalised values."""
    mean, std = _imagenet_stats(x)
    return (x - mean) / std


def denormalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised values (``N x 3 x H x W``) back to RGB (nominally ``[0, 1]``, not clamped)."""
    mean, std = _imagenet_stats(x)
    return x * std + mean


class RLNSTActor(nn.Module):
    """RL-NST's actor (Feng et al., 2023): a Gaussian over a 1-channel latent ``1 x H/4 x W/4``.

    9x9 conv 3->16 (``e1``), 3x3 stride-2 conv 16->32 (``e2``), 3x3 stride-2 conv 32->64 (``e3``), each with
    affine instance norm and ReLU, then a residual block. Of its 64 channels the first 32 are reduced by
    their channel mean to the latent mean; the last 32 are squashed log-scales (``-10 + 6 * (tanh + 1)``)
    and the latent std is the unbiased std over channels of ``exp(log_scale)``, plus ``1e-6``, as in the
    released code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNormReLU(3, 16, 9)
        self.conv2 = ConvNormReLU(16, 32, 3, stride=2)
        self.conv3 = ConvNormReLU(32, 64, 3, stride=2)
        self.res = NormResidualBlock(64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Skips]:
        """:param x: ImageNet-normalised RGB, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4.
        :return: latent mean and latent std (each ``N x 1 x H/4 x W/4``) and the skips ``(e1, e2, e3)``.
        """
        e1 = self.conv1(x)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        mu, raw_log_scale = self.res(e3).chunk(2, dim=1)
        latent_std = squash_log_scale(raw_log_scale).exp().std(dim=1, keepdim=True, unbiased=True) + 1e-6
        return mu.mean(dim=1, keepdim=True), latent_std, (e1, e2, e3)


class RLNSTStylizer(nn.Module):
    """RL-NST's stylizer (Feng et al., 2023): a U-Net decoder from the latent and the actor's skips.

    ``concat(latent, e3)`` -> nearest x2 -> 3x3 conv 65->64, IN, ReLU -> ``concat(., e2)`` -> nearest x2 ->
    3x3 conv 96->32, IN, ReLU -> ``concat(., e1)`` -> 9x9 conv 48->3.
    """

    def __init__(self) -> None:
        super().__init__()
        self.up3 = ConvNormReLU(1 + 64, 64, 3)
        self.up2 = ConvNormReLU(64 + 32, 32, 3)
        self.out_conv = ReflectConv2d(32 + 16, 3, 9)
        # The released checkpoint holds an instance norm for the output (``in1_d``) that its forward pass
        # never applies. It is kept, unused, so that the authors' state dict loads with ``strict=True``.
        self.out_norm = nn.InstanceNorm2d(3, affine=True)

    def forward(self, latent: torch.Tensor, skips: Skips) -> torch.Tensor:
        """:param latent: ``N x 1 x h x w`` (a sample, or the actor's mean).
        :param skips: the actor's ``(e1, e2, e3)`` for the same images.
        :return: the stylised image, ImageNet-normalised, ``N x 3 x 4h x 4w``.
        """
        e1, e2, e3 = skips
        hidden = torch.cat([latent.to(e3.dtype), e3], dim=1)
        hidden = self.up3(F.interpolate(hidden, scale_factor=2.0, mode="nearest"))
        hidden = self.up2(F.interpolate(torch.cat([hidden, e2], dim=1), scale_factor=2.0, mode="nearest"))
        return self.out_conv(torch.cat([hidden, e1], dim=1))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RLNSTActor",
    "RLNSTStylizer",
    "Skips",
    "denormalize_imagenet",
    "normalize_imagenet",
]
