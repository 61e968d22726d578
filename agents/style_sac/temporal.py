"""Temporal consistency of stylised video: the training regulariser and the evaluation metric.

- Training: RL-NST's video model (Feng et al., 2023) uses the *compound temporal regularisation* of Wang et
  al. ("Consistent Video Style Transfer via Compound Regularization", AAAI 2020). A frame ``x`` is warped
  with a random smooth flow ``f`` and noise is added: ``x' = W_f(x) + n``; the stylisation of ``x'`` must
  match the warped stylisation of ``x``: ``L1(S(x'), W_f(S(x)))``. No optical flow of real video is needed.
  :func:`random_smooth_flow`, :func:`compound_perturbation`, :func:`compound_temporal_loss` (torch).
- Evaluation: the *temporal warping error* (Lai et al., "Learning Blind Video Temporal Consistency", ECCV
  2018): the optical flow of the *input* frames (OpenCV's DIS or Farneback) warps stylised frame ``t`` onto
  frame ``t+1``; the squared difference is averaged over the pixels that the forward-backward consistency
  check does not mark as occluded (Ruder et al., 2016), then over frame pairs. :func:`optical_flow`,
  :func:`occlusion_mask`, :func:`input_flows`, :func:`warping_error` (numpy / OpenCV).

Flows are in pixels, channel 0 horizontal (x), channel 1 vertical (y), and *backward*: the warped image at
pixel ``p`` is the source image at ``p + flow(p)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


# ------------------------------------------------------------------------------------------ torch (training)
def warp(images: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward warping with bilinear sampling: ``out(p) = images(p + flow(p))``.

    :param images: ``N x C x H x W``.
    :param flow: ``N x 2 x H x W`` in pixels (x, then y).
    :return: the warped images and a ``N x 1 x H x W`` mask of the pixels whose source lies inside the image
        (outside, the border is repeated).
    """
    n, _, height, width = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=flow.dtype),
        torch.arange(width, device=images.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    valid = ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).unsqueeze(1)
    grid = torch.stack([2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0], dim=-1)
    warped = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return warped, valid.to(images.dtype)


def random_smooth_flow(
    n: int,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    std: float = 0.001,
    max_translation: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The compound regularisation's random flow (Wang et al., 2020, as used by RL-NST).

    A Gaussian map of ``H/100 x W/100 x 2`` values with standard deviation ``std`` (pixels) is upsampled
    bilinearly to ``H x W`` and blurred with a large Gaussian kernel (sigma a quarter of the shorter side),
    then a random translation uniform in ``[-max_translation, max_translation]`` pixels per axis is added.

    :param n: number of flows.
    :param height: image height.
    :param width: image width.
    :param device: where the flow is made.
    :param std: standard deviation of the coarse Gaussian map (paper: 0.001).
    :param max_translation: largest translation in pixels (paper: 10).
    :param generator: random generator (``None``: torch's global one).
    :return: ``n x 2 x H x W`` flows in pixels.
    """
    coarse = torch.randn(n, 2, max(1, height // 100), max(1, width // 100), device=device, generator=generator)
    smooth = F.interpolate(coarse * std, size=(height, width), mode="bilinear", align_corners=False)
    sigma = max(1.0, min(height, width) / 4.0)
    taps = 2 * math.ceil(3.0 * sigma) + 1
    smooth = TF.gaussian_blur(smooth, [taps, taps], [sigma, sigma])
    translation = (torch.rand(n, 2, 1, 1, device=device, generator=generator) * 2.0 - 1.0) * max_translation
    return smooth + translation


def compound_perturbation(
    frames: torch.Tensor,
    noise_range: tuple[float, float] = (0.001, 0.002),
    max_translation: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x' = W_f(x) + n``: frames warped by a :func:`random_smooth_flow` plus Gaussian noise.

    :param frames: RGB frames in ``[0, 1]``, ``N x 3 x H x W``.
    :param noise_range: the noise's standard deviation is drawn uniformly from this range per frame
        (paper: U(0.001, 0.002)).
    :param max_translation: see :func:`random_smooth_flow`.
    :param generator: random generator (``None``: torch's global one).
    :return: the perturbed frames and the flow used.
    """
    n, _, height, width = frames.shape
    flow = random_smooth_flow(n, height, width, frames.device, max_translation=max_translation, generator=generator)
    warped, _ = warp(frames, flow.to(frames.dtype))
    low, high = noise_range
    sigma = low + (high - low) * torch.rand(n, 1, 1, 1, device=frames.device, generator=generator)
    noise = torch.randn(frames.shape, device=frames.device, generator=generator) * sigma
    return warped + noise.to(frames.dtype), flow


def compound_temporal_loss(
    stylized_perturbed: torch.Tensor, stylized: torch.Tensor, flow: torch.Tensor
) -> torch.Tensor:
    """Mean absolute difference between ``S(W_f(x) + n)`` and ``W_f(S(x))`` where the warp stays inside.

    :param stylized_perturbed: stylisation of the perturbed frames, ``N x C x H x W``.
    :param stylized: stylisation of the original frames, same shape.
    :param flow: the flow of :func:`compound_perturbation`, ``N x 2 x H x W``.
    """
    warped, valid = warp(stylized, flow.to(stylized.dtype))
    difference = (stylized_perturbed - warped).abs() * valid
    return difference.sum() / (valid.sum() * stylized.shape[1]).clamp_min(1.0)


# ------------------------------------------------------------------------------------ numpy (evaluation)
FLOW_METHODS = ("dis", "farneback")


def optical_flow(source: np.ndarray, target: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense optical flow with OpenCV, such that ``source(p) ~ target(p + flow(p))``.

    :param source: ``H x W x 3`` uint8 RGB frame.
    :param target: ``H x W x 3`` uint8 RGB frame of the same size.
    :param method: ``"dis"`` (DIS, medium preset) or ``"farneback"``.
    :return: ``H x W x 2`` float32 flow in pixels (x, y).
    """
    a = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"Unknown optical flow method {method!r}; expected one of {FLOW_METHODS}.")


def warp_numpy(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward warping with OpenCV: ``out(p) = image(p + flow(p))`` (bilinear).

    :param image: ``H x W x C`` array (any dtype OpenCV remaps).
    :param flow: ``H x W x 2`` in pixels.
    :return: the warped image (float32) and a boolean ``H x W`` mask of sources inside the image.
    """
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped.reshape(image.shape), inside


def occlusion_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Pixels of frame ``t+1`` that are occluded (or leave the image) in frame ``t``.

    Forward-backward consistency (Ruder et al., 2016): with ``b`` the flow from ``t+1`` to ``t`` and ``f``
    from ``t`` to ``t+1`` read at ``p + b(p)``, a pixel is occluded where
    ``|f + b|^2 > 0.01 (|f|^2 + |b|^2) + 0.5``.

    :param backward: ``H x W x 2`` flow with ``frame_{t+1}(p) ~ frame_t(p + backward(p))``.
    :param forward: ``H x W x 2`` flow with ``frame_t(p) ~ frame_{t+1}(p + forward(p))``.
    :return: boolean ``H x W``, ``True`` where occluded.
    """
    forward_at, inside = warp_numpy(forward, backward)
    round_trip = ((forward_at + backward) ** 2).sum(axis=2)
    magnitude = (forward_at**2).sum(axis=2) + (backward**2).sum(axis=2)
    return (round_trip > 0.01 * magnitude + 0.5) | ~inside


class PairFlow(NamedTuple):
    """What the warping error needs from one pair of consecutive input frames ``t``, ``t+1``."""

    backward: np.ndarray  #: ``H x W x 2`` flow with ``frame_{t+1}(p) ~ frame_t(p + backward(p))``
    visible: np.ndarray  #: ``H x W`` bool, ``False`` where occluded (see :func:`occlusion_mask`)


def input_flows(inputs: Sequence[np.ndarray], method: str = "dis") -> list[PairFlow]:
    """The flows and occlusion masks of every consecutive pair of input frames (computed once per video and
    shared by every stylisation of it).

    :param inputs: the input frames, ``H x W x 3`` uint8 each (at least 2).
    :param method: optical flow method, see :func:`optical_flow`.
    """
    if len(inputs) < 2:
        raise ValueError(f"Need at least 2 frames, got {len(inputs)}.")
    flows = []
    for t in range(len(inputs) - 1):
        backward = optical_flow(inputs[t + 1], inputs[t], method)
        forward = optical_flow(inputs[t], inputs[t + 1], method)
        flows.append(PairFlow(backward, ~occlusion_mask(backward, forward)))
    return flows


def warping_error_maps(outputs: Sequence[np.ndarray], flows: Sequence[PairFlow]) -> list[np.ndarray]:
    """Per consecutive pair, the squared RGB difference (values in ``[0, 1]``) between stylised frame ``t+1``
    and stylised frame ``t`` warped by the input's flow; 0 where occluded.

    :param outputs: the stylised frames, ``H x W x 3`` uint8 each, one more than ``flows``.
    :param flows: :func:`input_flows` of the input frames.
    """
    if len(outputs) != len(flows) + 1:
        raise ValueError(f"Need one stylised frame more than flows: got {len(outputs)} and {len(flows)}.")
    maps = []
    for t, flow in enumerate(flows):
        warped, _ = warp_numpy(outputs[t].astype(np.float32) / 255.0, flow.backward)
        maps.append(((outputs[t + 1].astype(np.float32) / 255.0 - warped) ** 2).sum(axis=2) * flow.visible)
    return maps


def warping_error(
    inputs: Sequence[np.ndarray],
    outputs: Sequence[np.ndarray],
    method: str = "dis",
    flows: Sequence[PairFlow] | None = None,
) -> float:
    """Temporal warping error of a stylised video (Lai et al., 2018).

    For each consecutive pair, the mean over non-occluded pixels of the squared RGB difference between
    stylised frame ``t+1`` and the warped stylised frame ``t``; then the mean over pairs. Papers report it
    multiplied by 100 ("x 1e-2"). The input video's own value is the floor a perfectly consistent
    stylisation would reach with this flow.

    :param inputs: the input frames, ``H x W x 3`` uint8 each.
    :param outputs: the stylised frames, same count and size.
    :param method: optical flow method, see :func:`optical_flow`.
    :param flows: precomputed :func:`input_flows` of ``inputs`` (then ``method`` is not used).
    """
    if len(inputs) != len(outputs):
        raise ValueError(f"Need as many input as output frames: got {len(inputs)} and {len(outputs)}.")
    flows = input_flows(inputs, method) if flows is None else flows
    maps = warping_error_maps(outputs, flows)
    return float(np.mean([m.sum() / max(int(f.visible.sum()), 1) for m, f in zip(maps, flows)]))


__all__ = [
    "FLOW_METHODS",
    "PairFlow",
    "compound_perturbation",
    "compound_temporal_loss",
    "input_flows",
    "occlusion_mask",
    "optical_flow",
    "random_smooth_flow",
    "warp",
    "warp_numpy",
    "warping_error",
    "warping_error_maps",
]
