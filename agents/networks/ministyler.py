"""RLMiniStyler's networks: a unified actor, a builder and a critic for arbitrary-style sequential NST.

Hu et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural Style Generation", IJCAI 2025.

- :class:`MiniStylerActor` (217,312 parameters): one light encoder (MicroAST-like, no normalisation) shared by
  the moving image and the style image. On the style image it also emits the filter-modulation signals and
  the features the builder needs (a :class:`StyleCode`); on the moving image it parameterises a diagonal
  Gaussian over a 3D latent action ``64 x H/4 x W/4``.
- :class:`MiniStylerBuilder` (153,843 parameters): AdaIN + modulated residual blocks + modulated upsampling
  that turn a latent action into the next moving image, conditioned on the :class:`StyleCode`.
- :class:`MiniStylerCritic` (165,920 parameters): ``Q(moving image, latent action)``.

Conventions (those of the authors' released weights, see :mod:`agents.networks.pretrained`): images are RGB
in ``[0, 1]`` without normalisation; the moving image's height and width must be multiples of 4 (use
:func:`~agents.networks.layers.pad_to_multiple`); the builder's output is not clamped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from agents.networks.layers import (
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    GroupedDownBlock,
    Modulation,
    ModulationHead,
    ReflectConv2d,
    ResidualBlock,
    adain,
    channel_mean_std,
    squash_log_scale,
)

#: Channels of the latent action (and of the encoder's deepest features).
LATENT_CHANNELS = 64
#: Total downsampling of the encoder: the latent action is ``H/4 x W/4``.
DOWNSAMPLING = 4


@dataclass
class StyleCode:
    """Everything the actor's style branch produces for a batch of style images (``N`` samples).

    The builder consumes all of it; :meth:`representations` summarises it for the hierarchical style
    contrastive loss.
    """

    mod1_2: Modulation  #: 16-channel ``(w1_2, b1_2)`` from the 1/2-resolution stage (last upsampling)
    mod1_3: Modulation  #: 32-channel ``(w1_3, b1_3)`` from the 1/4-resolution stage (first upsampling)
    mod1: Modulation  #: 64-channel ``(w1, b1)`` from ``x1`` (builder's second residual block)
    mod2: Modulation  #: 64-channel ``(w2, b2)`` from ``x2`` (builder's first residual block)
    x1: torch.Tensor  #: style features after the first residual block, ``N x 64 x h x w``
    x2: torch.Tensor  #: style features after the second residual block, ``N x 64 x h x w``
    #: the style branch's shallow features: the refined 32-channel (1/2 resolution) and 64-channel (1/4
    #: resolution) stages that the upsampling modulations are read from (only the contrastive loss uses them)
    shallow: tuple[torch.Tensor, ...] = ()

    def representations(self) -> list[torch.Tensor]:
        """Style representations per level, shallow to deep, each ``N x D`` (RLMiniStyler's hierarchy).

        1. the shallow features' channel means and stds (``D = 64`` and ``D = 128``), when present;
        2. ``x1``'s channel means and stds (``D = 128``);
        3. ``x2``'s channel means and stds (``D = 128``);
        4. all modulation signals ``w1_2, b1_2, w1_3, b1_3, w1, b1, w2, b2`` flattened (``D = 352``).
        """
        levels = []
        for features in (*self.shallow, self.x1, self.x2):
            mean, std = channel_mean_std(features)
            levels.append(torch.cat([mean.flatten(start_dim=1), std.flatten(start_dim=1)], dim=1))
        signals = [mod.flatten() for mod in (self.mod1_2, self.mod1_3, self.mod1, self.mod2)]
        return [*levels, torch.cat(signals, dim=1).float()]


class MiniStylerEncoder(nn.Module):
    """The actor's shared encoder: 9x9 conv 3->16, ReLU; two grouped stride-2 stages (16->32->64); two
    residual blocks giving ``x1`` and ``x2`` (``64 x H/4 x W/4``). For a style image, each stage's features
    are refined by a full 3x3 convolution + ReLU and a :class:`~agents.networks.layers.ModulationHead` reads
    the modulation signals of the builder's upsampling stages from them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = ReflectConv2d(3, 16, 9)
        self.down1 = GroupedDownBlock(16, 32)
        self.style_refine1 = ReflectConv2d(32, 32, 3)
        self.style_modulation1 = ModulationHead(32, 16)
        self.down2 = GroupedDownBlock(32, LATENT_CHANNELS)
        self.style_refine2 = ReflectConv2d(LATENT_CHANNELS, LATENT_CHANNELS, 3)
        self.style_modulation2 = ModulationHead(LATENT_CHANNELS, 32)
        self.res1 = ResidualBlock(LATENT_CHANNELS)
        self.res2 = ResidualBlock(LATENT_CHANNELS)

    def forward(
        self, image: torch.Tensor, style: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[Modulation], list[torch.Tensor]]:
        """Encode an image.

        :param image: RGB in ``[0, 1]``, ``N x 3 x H x W``.
        :param style: run the style branch (refinements and modulation heads).
        :return: ``x1``, ``x2`` (each ``N x 64 x ceil(H/4) x ceil(W/4)``) and, for a style image, the 16- and
            32-channel modulations and the two refined stages they were read from (empty lists otherwise).
        """
        features = self.down1(F.relu(self.stem(image), inplace=True))
        modulations: list[Modulation] = []
        shallow: list[torch.Tensor] = []
        if style:
            features = F.relu(self.style_refine1(features), inplace=True)
            modulations.append(self.style_modulation1(features))
            shallow.append(features)
        features = self.down2(features)
        if style:
            features = F.relu(self.style_refine2(features), inplace=True)
            modulations.append(self.style_modulation2(features))
            shallow.append(features)
        x1 = self.res1(features)
        return x1, self.res2(x1), modulations, shallow


class MiniStylerActor(nn.Module):
    """RLMiniStyler's unified policy (Hu et al., IJCAI 2025): a Gaussian over the latent action.

    The state is (moving image, style image). The style image is encoded once per episode with
    :meth:`encode_style`; the released architecture's policy head reads only the moving image's deepest
    features (a depthwise 3x3 convolution, then 1x1 heads for the mean and the log-scale), and the style
    enters the next image through the builder, which is conditioned on the :class:`StyleCode`.

    The log-scale is squashed to ``[-10, 2]`` (``-10 + 6 * (tanh(raw) + 1)``); ``exp(log_scale)`` is the
    standard deviation. The action is a reparameterised sample, not tanh-squashed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = MiniStylerEncoder()
        self.feature_modulation1 = ModulationHead(LATENT_CHANNELS, LATENT_CHANNELS)
        self.feature_modulation2 = ModulationHead(LATENT_CHANNELS, LATENT_CHANNELS)
        self.policy_conv = ReflectConv2d(LATENT_CHANNELS, LATENT_CHANNELS, 3, groups=LATENT_CHANNELS)
        self.mean_head = ReflectConv2d(LATENT_CHANNELS, LATENT_CHANNELS, 1)
        self.log_scale_head = ReflectConv2d(LATENT_CHANNELS, LATENT_CHANNELS, 1)

    def encode_style(self, style: torch.Tensor) -> StyleCode:
        """Run the style branch.

        :param style: RGB style images in ``[0, 1]``, ``N x 3 x H_s x W_s`` (any size of at least 5 px per
            side; the builder uses only global statistics of the style).
        """
        x1, x2, (mod1_2, mod1_3), shallow = self.encoder(style, style=True)
        return StyleCode(
            mod1_2, mod1_3, self.feature_modulation1(x1), self.feature_modulation2(x2), x1, x2, tuple(shallow)
        )

    def set_initial_log_scale(self, log_scale: float) -> None:
        """Make the log-scale head output ``log_scale`` for every input (zero weights, matching bias): a fresh
        policy then starts at a chosen noise level instead of a random one per latent channel.

        :param log_scale: the log standard deviation, inside the squashing range
            ``(LOG_SCALE_MIN, LOG_SCALE_MAX) = (-10, 2)``.
        """
        if not LOG_SCALE_MIN < log_scale < LOG_SCALE_MAX:
            raise ValueError(f"initial log-scale must lie in ({LOG_SCALE_MIN}, {LOG_SCALE_MAX}), got {log_scale}.")
        half_range = 0.5 * (LOG_SCALE_MAX - LOG_SCALE_MIN)  # inverse of squash_log_scale
        nn.init.zeros_(self.log_scale_head.weight)
        nn.init.constant_(self.log_scale_head.bias, math.atanh((log_scale - LOG_SCALE_MIN) / half_range - 1.0))

    def forward(self, moving: torch.Tensor, style_code: StyleCode) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of the policy's Gaussian.

        :param moving: RGB moving images in ``[0, 1]``, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4.
        :param style_code: the style branch's output for the same batch (part of the state; the released
            policy head does not read it, see the class docstring).
        :return: ``mean`` and ``log_scale`` of the latent action, each ``N x 64 x H/4 x W/4``.
        """
        _, x2, _, _ = self.encoder(moving)
        hidden = self.policy_conv(x2)
        return self.mean_head(hidden), squash_log_scale(self.log_scale_head(hidden))

    def distribution(self, moving: torch.Tensor, style_code: StyleCode) -> Normal:
        """The policy as a :class:`torch.distributions.Normal` (use ``rsample`` for a reparameterised action).

        :param moving: see :meth:`forward`.
        :param style_code: see :meth:`forward`.
        """
        mean, log_scale = self(moving, style_code)
        return Normal(mean, log_scale.exp())


class ModulatedUpBlock(nn.Module):
    """Builder upsampling stage: bilinear x2, grouped 3x3 convolution (``groups = out_channels``), ReLU, a
    filter-modulated 1x1 convolution, ReLU.

    :param in_channels: input channels.
    :param out_channels: output channels (a divisor of ``in_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ReflectConv2d(in_channels, out_channels, 3, groups=out_channels)
        self.pointwise = ReflectConv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, modulation: Modulation) -> torch.Tensor:
        """:param x: ``N x in_channels x H x W``.
        :param modulation: ``(w, b)`` with ``out_channels`` entries each.
        :return: ``N x out_channels x 2H x 2W``.
        """
        upsampled = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        hidden = F.relu(self.conv(upsampled), inplace=True)
        return F.relu(modulation.apply(self.pointwise(hidden), hidden), inplace=True)


class MiniStylerBuilder(nn.Module):
    """RLMiniStyler's builder (Hu et al., IJCAI 2025; MicroAST's decoder): latent action + style -> image.

    ``AdaIN(action, x2)`` -> residual block modulated by ``(w2, b2)`` -> ``AdaIN(., x1)`` -> residual block
    modulated by ``(w1, b1)`` -> two :class:`ModulatedUpBlock` (64->32 with ``(w1_3, b1_3)``, 32->16 with
    ``(w1_2, b1_2)``) -> 9x9 convolution 16->3. The content reaches the image only through the action.
    """

    def __init__(self) -> None:
        super().__init__()
        self.deep_block = ResidualBlock(LATENT_CHANNELS)
        self.shallow_block = ResidualBlock(LATENT_CHANNELS)
        self.up1 = ModulatedUpBlock(LATENT_CHANNELS, 32)
        self.up2 = ModulatedUpBlock(32, 16)
        self.out_conv = ReflectConv2d(16, 3, 9)

    def forward(self, action: torch.Tensor, style_code: StyleCode) -> torch.Tensor:
        """Build the next moving image.

        :param action: latent action, ``N x 64 x h x w``.
        :param style_code: :meth:`MiniStylerActor.encode_style` of the ``N`` style images.
        :return: RGB image ``N x 3 x 4h x 4w``, nominally in ``[0, 1]`` but not clamped.
        """
        hidden = self.deep_block(adain(action, style_code.x2), style_code.mod2)
        hidden = self.shallow_block(adain(hidden, style_code.x1), style_code.mod1)
        hidden = self.up2(self.up1(hidden, style_code.mod1_3), style_code.mod1_2)
        return self.out_conv(hidden)


class MiniStylerCritic(nn.Module):
    """Soft Q-function ``Q(moving image, latent action)`` for RLMiniStyler (Hu et al., IJCAI 2025).

    The moving image goes through a 3-stage encoder like the actor's trunk (9x9 conv 3->16, ReLU; two
    grouped stride-2 stages to 64 channels at ``H/4 x W/4``), is concatenated with the action along the
    channels, then 3x3 conv 128->128, ReLU, 1x1 conv 128->64; Q is the mean over channels and positions.
    Unlike the released code there is no final ReLU: rewards are negative style losses, so Q must be able to
    be negative. With ``observe_style`` the style image is stacked onto the moving image (6 input channels),
    so Q can value progress per style; the papers' critic sees the moving image only.

    :param latent_channels: channels of the latent action.
    :param observe_style: also read the style image (an option of ours, off in the papers).
    """

    def __init__(self, latent_channels: int = LATENT_CHANNELS, observe_style: bool = False) -> None:
        super().__init__()
        self.stem = ReflectConv2d(6 if observe_style else 3, 16, 9)
        self.down1 = GroupedDownBlock(16, 32)
        self.down2 = GroupedDownBlock(32, 64)
        self.fuse = ReflectConv2d(64 + latent_channels, 128, 3)
        self.out_conv = ReflectConv2d(128, 64, 1)

    def forward(self, moving: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """:param moving: RGB in ``[0, 1]``, ``N x 3 x H x W`` with ``H`` and ``W`` multiples of 4 (with
            ``observe_style``: moving and style image stacked, ``N x 6 x H x W``).
        :param action: latent action, ``N x latent_channels x H/4 x W/4``.
        :return: Q-values, ``N x 1``.
        """
        features = self.down2(self.down1(F.relu(self.stem(moving), inplace=True)))
        hidden = F.relu(self.fuse(torch.cat([features, action.to(features.dtype)], dim=1)), inplace=True)
        return self.out_conv(hidden).mean(dim=(1, 2, 3)).unsqueeze(1)


__all__ = [
    "DOWNSAMPLING",
    "LATENT_CHANNELS",
    "MiniStylerActor",
    "MiniStylerBuilder",
    "MiniStylerCritic",
    "MiniStylerEncoder",
    "ModulatedUpBlock",
    "StyleCode",
]
