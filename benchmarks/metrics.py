"""Style-transfer quality metrics of the MicroAST protocol (Wang et al., AAAI 2023), which RLMiniStyler's
Table 1 follows (the evaluation protocol, docs/design.md), computed with our VGG-19 (:class:`nst_env.vgg.VGG19Features`):

- **content loss**: mean over relu4_1 and relu5_1 of the feature MSE between the output and the content photo;
- **style loss**: average over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of MSE(channel means) +
  MSE(channel stds) between the output and the style image, both resized to 256x256;
- **SSIM**: scikit-image's ``structural_similarity`` between the grayscale uint8 content photo and output.

Our VGG is normalised per layer (docs/env.md, VGG-19 weights), so absolute values differ from the papers'; compare
methods measured with this module in one run.

    from benchmarks.metrics import QualityMetrics
    metrics = QualityMetrics(device="cpu")
    reference = metrics.reference(content, style)     # H x W x 3 uint8 arrays; VGG of both computed once
    scores = metrics.evaluate(output, reference)      # {"content_loss": ..., "style_loss": ..., "ssim": ...}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

from agents.inference.quality import STYLE_LAYERS, STYLE_SIDE, StepQuality, grayscale
from nst_env.losses import StyleStats, content_loss

#: Layers of the content loss (the style loss's are :data:`agents.inference.quality.STYLE_LAYERS`).
CONTENT_LAYERS: tuple[str, ...] = ("relu4_1", "relu5_1")
__all__ = ["CONTENT_LAYERS", "STYLE_LAYERS", "STYLE_SIDE", "QualityMetrics", "Reference", "ssim"]


def ssim(content: np.ndarray, output: np.ndarray) -> float:
    """SSIM of the grayscale uint8 images (scikit-image defaults: 7x7 window, data range 255).

    :param content: ``H x W x 3`` uint8 content photo (at least 7x7).
    :param output: ``H x W x 3`` uint8 stylised image of the same size.
    """
    if content.shape != output.shape:
        raise ValueError(f"SSIM needs images of the same shape, got {content.shape} and {output.shape}.")
    return float(structural_similarity(grayscale(content), grayscale(output), data_range=255))


@dataclass
class Reference:
    """A content/style pair's targets, computed once and reused for every output of the pair."""

    content: np.ndarray  #: ``H x W x 3`` uint8 content photo (outputs must have its size)
    content_features: dict[str, torch.Tensor]  #: VGG activations of the photo at :data:`CONTENT_LAYERS`
    style_stats: StyleStats  #: mean/std of the style image at :data:`STYLE_LAYERS`, image at 256x256


class QualityMetrics(StepQuality):
    """Content loss, style loss and SSIM of stylised images (see the module docstring); the style loss is the
    package's own (:class:`agents.inference.quality.StepQuality`), the SSIM scikit-image's.

    :param device: where VGG-19 runs.
    :param vgg_weights: explicit VGG-19 weights (see :func:`nst_env.vgg.load_vgg19_weights`).
    """

    @torch.no_grad()
    def full_size_features(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """VGG activations (:data:`STYLE_LAYERS`) of an ``H x W x 3`` uint8 image at its own size."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return self.vgg(tensor)

    def reference(self, content: np.ndarray, style: np.ndarray) -> Reference:
        """Targets of one pair.

        :param content: ``H x W x 3`` uint8 content photo.
        :param style: ``h x w x 3`` uint8 style image (any size; resized to 256x256).
        """
        content_features = self.full_size_features(content)
        return Reference(
            content=content,
            content_features={name: content_features[name] for name in CONTENT_LAYERS},
            style_stats=self.style_target(style),
        )

    def evaluate(self, output: np.ndarray, reference: Reference) -> dict[str, float]:
        """``content_loss``, ``style_loss`` and ``ssim`` of one output.

        :param output: ``H x W x 3`` uint8 stylised image, the size of the reference's content photo.
        :param reference: :meth:`reference` of the pair.
        """
        if output.shape != reference.content.shape:
            raise ValueError(f"The output is {output.shape} but the content photo is {reference.content.shape}.")
        features = self.full_size_features(output)
        content = np.mean([float(content_loss(features[n], reference.content_features[n])) for n in CONTENT_LAYERS])
        style = self.style_loss(output, reference.style_stats)
        return {"content_loss": float(content), "style_loss": style, "ssim": ssim(reference.content, output)}
