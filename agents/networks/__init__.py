"""The papers' networks in PyTorch, compatible with the authors' released weights.

- RLMiniStyler (Hu et al., IJCAI 2025, "Light-weight RL Style Agent for Arbitrary Sequential Neural Style
  Generation"): :class:`MiniStylerActor`, :class:`MiniStylerBuilder`, :class:`MiniStylerCritic`,
  :class:`StyleCode`.
- RL-NST (Feng et al., 2023, "Controlling Neural Style Transfer with Deep Reinforcement Learning"):
  :class:`RLNSTActor`, :class:`RLNSTBuilder`; for video :class:`RLNSTVideoActor`, :class:`RLNSTVideoBuilder`.
- Released weights: :func:`load_ministyler_pretrained`, :func:`load_rlnst_pretrained`.

    from agents.networks import MiniStylerActor, MiniStylerBuilder, load_ministyler_pretrained
    from agents.networks import pad_to_multiple

    actor, builder = MiniStylerActor().eval(), MiniStylerBuilder().eval()
    load_ministyler_pretrained(actor, builder)
    moving, size = pad_to_multiple(content, 4)  # RGB in [0, 1]
    code = actor.encode_style(style)
    mean, log_scale = actor(moving, code)
    image = builder(mean, code)[..., : size[0], : size[1]].clamp(0, 1)
"""

from agents.networks.layers import (
    Modulation,
    ReflectConv2d,
    adain,
    channel_mean_std,
    crop_to_size,
    pad_to_multiple,
)
from agents.networks.ministyler import (
    DOWNSAMPLING,
    LATENT_CHANNELS,
    MiniStylerActor,
    MiniStylerBuilder,
    MiniStylerCritic,
    StyleCode,
)
from agents.networks.pretrained import (
    PRETRAINED_DIR,
    RLNST_STYLES,
    load_ministyler_pretrained,
    load_rlnst_pretrained,
    rlnst_style_image_path,
)
from agents.networks.rlnst import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RLNSTActor,
    RLNSTBuilder,
    RLNSTVideoActor,
    RLNSTVideoBuilder,
    denormalize_imagenet,
    normalize_imagenet,
)

__all__ = [
    "DOWNSAMPLING",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LATENT_CHANNELS",
    "PRETRAINED_DIR",
    "RLNST_STYLES",
    "MiniStylerActor",
    "MiniStylerBuilder",
    "MiniStylerCritic",
    "Modulation",
    "RLNSTActor",
    "RLNSTBuilder",
    "RLNSTVideoActor",
    "RLNSTVideoBuilder",
    "ReflectConv2d",
    "StyleCode",
    "adain",
    "channel_mean_std",
    "crop_to_size",
    "denormalize_imagenet",
    "load_ministyler_pretrained",
    "load_rlnst_pretrained",
    "normalize_imagenet",
    "pad_to_multiple",
    "rlnst_style_image_path",
]
