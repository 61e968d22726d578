"""Building blocks shared by the RL-NST and RLMiniStyler networks.

- :class:`ReflectConv2d`: every convolution of both papers pads by reflection (``kernel_size // 2``).
- :func:`channel_mean_std` and :func:`adain`: channel statistics with the *unbiased* variance plus ``1e-5``
  inside the square root, and adaptive instance normalisation (Huang & Belongie, 2017).
- Filter modulation (MicroAST, Wang et al., 2023; reused by RLMiniStyler, Hu et al., IJCAI 2025): a
  convolution ``y = conv(x)`` is modulated by per-sample, per-channel vectors ``w, b`` of shape
  ``N x C x 1 x 1`` as ``w * y + b * x`` (:class:`Modulation`, :class:`ModulationHead`,
  :class:`ResidualBlock`).
- Blocks with affine instance normalisation for RL-NST (Feng et al., 2023): :class:`ConvNormReLU`,
  :class:`NormResidualBlock`; and the convolutional GRU of its video model, :class:`ConvGRUCell`.
- :func:`pad_to_multiple` / :func:`crop_to_size`: the networks downsample by 4, so images whose sides are not
  multiples of 4 are reflect-padded on the bottom/right before and cropped back after.

All blocks are device-agnostic and autocast-friendly: channel statistics are computed in float32 and cast
back to the input's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nst_env.losses import (
    channel_mean_std,  # one definition, shared with the env's style loss
)


class ReflectConv2d(nn.Conv2d):
    """``nn.Conv2d`` with reflection padding of ``kernel_size // 2`` on every side.

    The parameters are the plain ``weight`` and ``bias`` of :class:`torch.nn.Conv2d`.

    :param in_channels: input channels.
    :param out_channels: output channels.
    :param kernel_size: square kernel size (odd, so the spatial size is kept at stride 1).
    :param stride: stride (2 halves the spatial size, rounding up).
    :param groups: channel groups (``in_channels`` for a depthwise convolution).

    Initialisation: He (Kaiming) normal weights for ReLU (fan-in) and zero biases, not PyTorch's default
    ``kaiming_uniform_(a=sqrt(5))``. The default shrinks the signal about 2.5x per layer, so a fresh
    RLMiniStyler actor emits latents whose per-channel spatial std (~5e-4) is below AdaIN's ``eps``: the
    builder's first AdaIN then erases the moving image and training collapses to one content-independent
    image. He initialisation keeps that std near 1 (a deviation from the released code, which used the
    default; the released *weights* are unaffected).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            padding_mode="reflect" if kernel_size > 1 else "zeros",  # a 1x1 kernel pads nothing: skip the copy
        )

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: give ``content`` the channel mean and std of ``style``.

    :param content: ``N x C x H x W``.
    :param style: ``N x C x H' x W'`` (any spatial size).
    :param eps: see :func:`channel_mean_std`.
    :return: ``N x C x H x W`` in ``content``'s dtype.
    """
    content_mean, content_std = channel_mean_std(content, eps)
    style_mean, style_std = channel_mean_std(style, eps)
    scale = style_std / content_std  # (content - content_mean) / content_std * style_std + style_mean, one pass
    return torch.addcmul(style_mean - content_mean * scale, content.float(), scale).to(content.dtype)


#: Range of the policies' log-scale (both papers), see :func:`squash_log_scale`.
LOG_SCALE_MIN, LOG_SCALE_MAX = -10.0, 2.0


def squash_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """Map a raw network output to a log standard deviation in ``[LOG_SCALE_MIN, LOG_SCALE_MAX]``.

    ``-10 + 6 * (tanh(raw) + 1)``, as in both papers' released code.

    :param raw: unbounded head output.
    """
    return LOG_SCALE_MIN + 0.5 * (LOG_SCALE_MAX - LOG_SCALE_MIN) * (torch.tanh(raw) + 1.0)


class Modulation(NamedTuple):
    """Per-sample filter-modulation signals, each ``N x C x 1 x 1``."""

    weight: torch.Tensor  #: scales the convolution's output
    bias: torch.Tensor  #: scales the convolution's input, added to the output

    def apply(self, output: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Filter modulation of one convolution: ``weight * output + bias * inputs``.

        :param output: the convolution's output, ``N x C x H x W``.
        :param inputs: the convolution's input, same shape (the modulated convolutions keep the channels).
        """
        return torch.addcmul(self.bias * inputs, self.weight, output)

    def flatten(self) -> torch.Tensor:
        """``weight`` and ``bias`` concatenated, ``N x 2C``."""
        return torch.cat([self.weight.flatten(start_dim=1), self.bias.flatten(start_dim=1)], dim=1)


class ModulationHead(nn.Module):
    """Two heads predicting a :class:`Modulation` from features: a grouped 3x3 convolution each, then global
    average pooling. ``groups = out_channels`` (depthwise when ``in_channels == out_channels``).

    :param in_channels: feature channels.
    :param out_channels: channels of the modulated convolution (a divisor of ``in_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight_head = ReflectConv2d(in_channels, out_channels, 3, groups=out_channels)
        self.bias_head = ReflectConv2d(in_channels, out_channels, 3, groups=out_channels)

    def forward(self, features: torch.Tensor) -> Modulation:
        """:param features: ``N x in_channels x H x W``.
        :return: weight and bias, each ``N x out_channels x 1 x 1``."""
        return Modulation(
            self.weight_head(features).mean(dim=(2, 3), keepdim=True),
            self.bias_head(features).mean(dim=(2, 3), keepdim=True),
        )


class GroupedDownBlock(nn.Module):
    """Downsampling by 2 at low cost: a 3x3 stride-2 convolution with ``groups = in_channels``, ReLU, then a
    1x1 convolution, ReLU (MicroAST's encoder stage, used by RLMiniStyler's actor and our critic).

    :param in_channels: input channels.
    :param out_channels: output channels (a multiple of ``in_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.spatial = ReflectConv2d(in_channels, out_channels, 3, stride=2, groups=in_channels)
        self.pointwise = ReflectConv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``N x in_channels x H x W``. :return: ``N x out_channels x ceil(H/2) x ceil(W/2)``."""
        return F.relu(self.pointwise(F.relu(self.spatial(x), inplace=True)), inplace=True)


class ResidualBlock(nn.Module):
    """Residual block of two 3x3 convolutions without normalisation, optionally filter-modulated.

    - plain: ``x + conv2(relu(conv1(x)))``;
    - modulated by ``(w, b)``: ``h = relu(w * conv1(x) + b * x)``, output ``x + w * conv2(h) + b * h``.

    :param channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ReflectConv2d(channels, channels, 3)
        self.conv2 = ReflectConv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor, modulation: Modulation | None = None) -> torch.Tensor:
        """:param x: ``N x channels x H x W``.
        :param modulation: per-sample ``(w, b)`` with ``channels`` entries each; ``None``: a plain block.
        """
        if modulation is None:
            return x + self.conv2(F.relu(self.conv1(x), inplace=True))
        hidden = F.relu(modulation.apply(self.conv1(x), x), inplace=True)
        return x + modulation.apply(self.conv2(hidden), hidden)


class ConvNormReLU(nn.Module):
    """Reflection-padded convolution, affine instance normalisation (eps ``1e-5``), optional ReLU (RL-NST).

    :param in_channels: input channels.
    :param out_channels: output channels.
    :param kernel_size: square kernel size.
    :param stride: stride.
    :param relu: apply a ReLU after the normalisation.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True
    ) -> None:
        super().__init__()
        self.conv = ReflectConv2d(in_channels, out_channels, kernel_size, stride=stride)
        self.norm = nn.InstanceNorm2d(out_channels, eps=1e-5, affine=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``N x in_channels x H x W``."""
        out = self.norm(self.conv(x))
        return F.relu(out, inplace=True) if self.relu else out


class NormResidualBlock(nn.Module):
    """RL-NST's residual block: ``relu(x + IN(conv(relu(IN(conv(x))))))`` with 3x3 convolutions.

    :param channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = ConvNormReLU(channels, channels, 3)
        self.block2 = ConvNormReLU(channels, channels, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``N x channels x H x W``."""
        return F.relu(x + self.block2(self.block1(x)), inplace=True)


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (Ballas et al., 2016): a GRU whose gates are reflection-padded convolutions.

    ``z, r = sigmoid(conv_g([x, h]))``, ``n = tanh(conv_n([x, r * h]))``, ``h' = (1 - z) * h + z * n``.

    The candidate convolution starts at zero, so a fresh cell's state stays 0 until training moves it: a
    network that adds the state to its features starts out as the network without the cell (used to extend
    RL-NST's image model to video, Feng et al., 2023).

    :param in_channels: channels of the input ``x``.
    :param hidden_channels: channels of the state ``h`` (RL-NST's video model: 64).
    :param kernel_size: square kernel of both convolutions (RL-NST's video model: 3).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = ReflectConv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size)
        self.candidate = ReflectConv2d(in_channels + hidden_channels, hidden_channels, kernel_size)
        nn.init.zeros_(self.candidate.weight)
        nn.init.zeros_(self.candidate.bias)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """One update of the state.

        :param x: ``N x in_channels x H x W``.
        :param hidden: the previous state, ``N x hidden_channels x H x W``; ``None``: zeros.
        :return: the new state, ``N x hidden_channels x H x W``.
        """
        if hidden is None:
            hidden = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        hidden = hidden.to(x.dtype)
        update, reset = torch.sigmoid(self.gates(torch.cat([x, hidden], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * hidden], dim=1)))
        return (1.0 - update) * hidden + update * candidate


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an image on the bottom and right so that its height and width are multiples of ``multiple``.

    Reflection padding where the image is large enough (pad < side), replication otherwise (tiny images).
    Undo with :func:`crop_to_size`.

    :param x: ``N x C x H x W``.
    :param multiple: the networks' total downsampling factor (4 for both papers' networks).
    :return: the padded tensor and the original ``(H, W)``.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (height, width)


def crop_to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the bottom/right padding added by :func:`pad_to_multiple`.

    :param x: ``... x H' x W'`` with ``H' >= size[0]`` and ``W' >= size[1]``.
    :param size: the ``(H, W)`` to keep.
    """
    return x[..., : size[0], : size[1]]


__all__ = [
    "LOG_SCALE_MAX",
    "LOG_SCALE_MIN",
    "ConvGRUCell",
    "ConvNormReLU",
    "GroupedDownBlock",
    "Modulation",
    "ModulationHead",
    "NormResidualBlock",
    "ReflectConv2d",
    "ResidualBlock",
    "adain",
    "channel_mean_std",
    "crop_to_size",
    "pad_to_multiple",
    "squash_log_scale",
]
