"""RL-NST's networks: an actor over a 2D latent and a U-Net builder, one model per style.

Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023.

- :class:`RLNSTActor` (101,376 parameters): three conv + instance-norm stages and a residual block; the 64
  output channels split into 32 for the mean and 32 for the log-scale, each reduced over channels to a
  1-channel latent ``1 x H/4 x W/4``. Also returns the three encoder stages' features as U-Net skips.
- :class:`RLNSTBuilder` (77,049 parameters): nearest-neighbour upsampling of the latent concatenated with the
  skips back to an image.
- Video model: :class:`RLNSTVideoActor` adds a *step-wise* ConvGRU (64 channels, 3x3) whose state is carried
  over the stylisation steps of one frame; :class:`RLNSTVideoBuilder` adds a *frame-wise* ConvGRU whose state
  is carried from the same step of the previous frame. Each state is added to the deepest features, and a
  fresh GRU's state is 0 (:class:`~agents.networks.layers.ConvGRUCell`), so an untrained video model computes
  exactly what the image model with the same weights computes.

Conventions (those of the authors' released weights, see :mod:`agents.networks.pretrained`): inputs are
normalised with the ImageNet mean and std (:func:`normalize_imagenet`) and the builder's output is in the
same normalised space (feed it back as is; :func:`denormalize_imagenet` to display). Height and width must
be multiples of 4 (use :func:`~agents.networks.layers.pad_to_multiple`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agents.networks.layers import (
    ConvGRUCell,
    ConvNormReLU,
    NormResidualBlock,
    ReflectConv2d,
    squash_log_scale,
)

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

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, Skips]:
        """The encoder: deepest features and skips.

        :param x: ImageNet-normalised RGB, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4.
        :return: the residual block's 64 channels (``N x 64 x H/4 x W/4``) and the skips ``(e1, e2, e3)``.
        """
        e1 = self.conv1(x)
        e2 = self.conv2(e1)
        e3 = self.conv3(e2)
        return self.res(e3), (e1, e2, e3)

    @staticmethod
    def latent_distribution(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and std from the 64 deepest channels (first 32: mean; last 32: log-scales).

        :param features: ``N x 64 x h x w``.
        :return: mean and std, each ``N x 1 x h x w``.
        """
        mu, raw_log_scale = features.chunk(2, dim=1)
        latent_std = squash_log_scale(raw_log_scale).exp().std(dim=1, keepdim=True, unbiased=True) + 1e-6
        return mu.mean(dim=1, keepdim=True), latent_std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Skips]:
        """:param x: ImageNet-normalised RGB, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4.
        :return: latent mean and latent std (each ``N x 1 x H/4 x W/4``) and the skips ``(e1, e2, e3)``.
        """
        features, skips = self.encode(x)
        return (*self.latent_distribution(features), skips)


class RLNSTBuilder(nn.Module):
    """RL-NST's builder (Feng et al., 2023): the decoding half of a U-Net, from the latent and the actor's skips.

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


class RLNSTVideoActor(RLNSTActor):
    """RL-NST's video actor (Feng et al., 2023): :class:`RLNSTActor` with a step-wise ConvGRU.

    The GRU (64 channels, 3x3) reads the encoder's deepest features; its state is carried over the
    stylisation steps of one frame (reset at each frame's first step) and added to the features before the
    latent distribution is read off them. 101,376 + 221,376 parameters.

    :param hidden_channels: channels of the GRU state (paper: 64; the features it is added to have 64).
    """

    def __init__(self, hidden_channels: int = 64) -> None:
        super().__init__()
        self.step_gru = ConvGRUCell(64, hidden_channels, 3)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Skips, torch.Tensor]:
        """:param x: ImageNet-normalised RGB, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4.
        :param hidden: the step-wise state after the previous step of this frame; ``None`` at a frame's first
            step (zeros).
        :return: latent mean and std (each ``N x 1 x H/4 x W/4``), the skips and the new step-wise state.
        """
        features, skips = self.encode(x)
        hidden = self.step_gru(features, hidden)
        return (*self.latent_distribution(features + hidden), skips, hidden)


class RLNSTVideoBuilder(RLNSTBuilder):
    """RL-NST's video builder (Feng et al., 2023): :class:`RLNSTBuilder` with a frame-wise ConvGRU.

    The GRU (64 channels, 3x3) reads ``concat(latent, e3)``; its state is carried from the same stylisation
    step of the previous frame and added to ``e3`` before decoding. 77,049 + 223,104 parameters.

    :param hidden_channels: channels of the GRU state (paper: 64, the channels of ``e3``).
    """

    def __init__(self, hidden_channels: int = 64) -> None:
        super().__init__()
        self.frame_gru = ConvGRUCell(1 + 64, hidden_channels, 3)

    def forward(  # type: ignore[override]
        self, latent: torch.Tensor, skips: Skips, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:param latent: ``N x 1 x h x w``.
        :param skips: the actor's ``(e1, e2, e3)`` for the same images.
        :param hidden: the frame-wise state from the same step of the previous frame; ``None`` in a video's
            first frame (zeros).
        :return: the stylised image (ImageNet-normalised, ``N x 3 x 4h x 4w``) and the new frame-wise state.
        """
        e1, e2, e3 = skips
        hidden = self.frame_gru(torch.cat([latent.to(e3.dtype), e3], dim=1), hidden)
        return super().forward(latent, (e1, e2, e3 + hidden)), hidden


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RLNSTActor",
    "RLNSTBuilder",
    "RLNSTVideoActor",
    "RLNSTVideoBuilder",
    "Skips",
    "denormalize_imagenet",
    "normalize_imagenet",
]
