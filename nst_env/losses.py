"""Perceptual losses on VGG-19 activations: content, style (Gram or channel mean/std) and total variation.

- Content loss: feature MSE (Gatys et al., 2016).
- Gram style loss: MSE of Gram matrices normalised by ``C*H*W`` (RL-NST, Feng et al., 2023).
- Mean/std style loss: MSE of channel means plus MSE of channel standard deviations, summed over layers
  (AdaIN, Huang & Belongie, 2017; used by RLMiniStyler, Hu et al., 2025).

Style targets are computed once per style image with :func:`style_statistics` and reused every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

#: Style-loss kinds and their default VGG-19 layers. RL-NST uses VGG-16's relu1_2/2_2/3_3/4_3; we use the
#: same-named layers of VGG-19 (docs/deviations.md).
STYLE_LAYERS: dict[str, tuple[str, ...]] = {
    "meanstd": ("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
    "gram": ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
}
#: Content layer paired with each style-loss kind (RLMiniStyler: relu4_1; RL-NST: relu2_2).
CONTENT_LAYER: dict[str, str] = {"meanstd": "relu4_1", "gram": "relu2_2"}

StyleStats = dict[str, tuple[torch.Tensor, ...]]


def channel_mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and ``sqrt(unbiased variance + eps)`` over the spatial positions.

    Computed in float32, so float16 activations under autocast neither overflow nor lose precision (the
    convention of AdaIN and of both papers' released code).

    :param features: ``N x C x H x W`` with ``H * W >= 2``.
    :param eps: added to the variance before the square root.
    :return: mean and std, each ``N x C x 1 x 1`` in float32.
    """
    features = features.float()
    mean = features.mean(dim=(2, 3), keepdim=True)
    deviation = features - mean  # two passes: several times faster than torch.var's on the CPU, as exact
    variance = (deviation * deviation).sum(dim=(2, 3), keepdim=True) / (features.shape[2] * features.shape[3] - 1)
    return mean, (variance + eps).sqrt()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``F F^T / (C*H*W)`` of ``N x C x H x W`` features, shape ``N x C x C``."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_statistics(features: Mapping[str, torch.Tensor], kind: str, layers: Sequence[str]) -> StyleStats:
    """Statistics that a style loss compares, per layer: ``(mean, std)`` or ``(gram,)``.

    :param features: VGG activations by layer name.
    :param kind: ``"meanstd"`` or ``"gram"``.
    :param layers: which layers to summarise.
    """
    if kind == "meanstd":
        return {name: channel_mean_std(features[name]) for name in layers}
    if kind == "gram":
        return {name: (gram_matrix(features[name]),) for name in layers}
    raise ValueError(f"Unknown style loss {kind!r}; expected one of {sorted(STYLE_LAYERS)}.")


def pack_mean_std(stats: StyleStats) -> torch.Tensor:
    """Flatten ``"meanstd"`` statistics into one ``N x 2*sum(C)`` float32 row per image (layer by layer: the
    channel means, then the channel stds), e.g. to store them in a replay buffer.

    :param stats: :func:`style_statistics` with ``kind="meanstd"``.
    """
    return torch.cat([t.float().flatten(1) for pair in stats.values() for t in pair], dim=1)


def unpack_mean_std(rows: torch.Tensor, channels: Mapping[str, int]) -> StyleStats:
    """Inverse of :func:`pack_mean_std`.

    :param rows: ``N x 2*sum(C)`` packed statistics.
    :param channels: channels per layer, in the packing order (e.g. ``{"relu1_1": 64, ...}``).
    """
    expected = 2 * sum(channels.values())
    if rows.ndim != 2 or rows.shape[1] != expected:
        raise ValueError(f"Expected packed statistics of shape N x {expected}, got {tuple(rows.shape)}.")
    stats, start = {}, 0
    for name, c in channels.items():
        mean, std = rows[:, start : start + c], rows[:, start + c : start + 2 * c]
        stats[name] = (mean[..., None, None], std[..., None, None])
        start += 2 * c
    return stats


def style_loss(
    features: Mapping[str, torch.Tensor], target: StyleStats, kind: str, reduction: str = "mean"
) -> torch.Tensor:
    """Style loss of ``features`` against precomputed target statistics, summed over the target's layers.

    :param features: VGG activations of the images being judged, by layer name.
    :param target: :func:`style_statistics` of the style images (batch 1 broadcasts over the batch).
    :param kind: ``"meanstd"`` or ``"gram"``.
    :param reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per image, shape ``N``).
    """
    total: torch.Tensor | float = 0.0
    for name, stats in style_statistics(features, kind, list(target)).items():
        for mine, theirs in zip(stats, target[name]):
            err = (mine - theirs.expand_as(mine)).float().pow(2)
            total = total + err.flatten(1).mean(dim=1)
    assert isinstance(total, torch.Tensor)
    return _reduce(total, reduction)


def content_loss(features: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Feature MSE between ``N x C x H x W`` activations (``reduction`` as in :func:`style_loss`)."""
    return _reduce((features - target).float().pow(2).flatten(1).mean(dim=1), reduction)


def total_variation(images: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Sum of absolute differences between neighbouring pixels, per image (``reduction`` as above)."""
    dh = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).sum(dim=1)
    dw = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).sum(dim=1)
    return _reduce(dh + dw, reduction)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"Unknown reduction {reduction!r}; expected 'mean' or 'none'.")


def content_style_layers(kind: str) -> tuple[str, ...]:
    """All VGG layers one pass must compute for ``kind``'s style loss plus its content loss."""
    if kind not in STYLE_LAYERS:
        raise ValueError(f"Unknown style loss {kind!r}; expected one of {sorted(STYLE_LAYERS)}.")
    return tuple(dict.fromkeys(STYLE_LAYERS[kind] + (CONTENT_LAYER[kind],)))


__all__ = [
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "channel_mean_std",
    "content_loss",
    "content_style_layers",
    "gram_matrix",
    "pack_mean_std",
    "style_loss",
    "style_statistics",
    "total_variation",
    "unpack_mean_std",
]
