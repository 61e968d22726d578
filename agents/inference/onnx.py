"""ONNX: export one deterministic stylisation step (actor + builder) checked against PyTorch, and run it in ONNX
Runtime (:class:`OnnxRunner`).

Two graphs are written, so that a style image is encoded once for all its steps, frames and photos:

- ``<stem>_style.onnx`` (:class:`StyleEncoder`): ``style`` (``N x 3 x H_s x W_s``) to the actor's style code, the
  tensors named in :data:`CODE_NAMES`;
- the step (:class:`DeterministicStep`): ``moving`` (``N x 3 x H x W``) and the style code to ``next``: the
  builder's image for the mean latent, clamped to ``[0, 1]``, i.e. ``policy.act(..., deterministic=True)``.

Images are RGB float32 in ``[0, 1]``; batch, height and width are dynamic (sides that are not multiples of 4 are
reflect-padded inside the graphs, as in PyTorch). :func:`cached_export` keeps one export per model (named by a
hash of its weights and the exporter's version) in a cache folder. Only RLMiniStyler models export.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.files import atomic_path, remove_partial_files
from agents.inference.runners import PreparedStyle, at_least_min_side, image_to_tensor, resize_style, tensor_to_image
from agents.networks import Modulation, StyleCode
from agents.style_sac import MiniStylerPolicy

if TYPE_CHECKING:
    import onnxruntime

#: ``(height, width)`` of the moving images used to check the export (the second is not a multiple of 4).
CHECK_SIZES = ((64, 64), (50, 70))
#: Side of the style images used to check the export.
CHECK_STYLE_SIZE = (56, 44)
#: Names of the style code's tensors, the style encoder's outputs and the step's inputs after ``moving``.
CODE_NAMES = (
    "mod1_2_weight",
    "mod1_2_bias",
    "mod1_3_weight",
    "mod1_3_bias",
    "mod1_weight",
    "mod1_bias",
    "mod2_weight",
    "mod2_bias",
    "x1",
    "x2",
)
#: ONNX opsets the export is known to work with (reflection padding needs 11; 17 is the default).
OPSETS = (13, 20)


def _pad_to_multiple_of_4(images: torch.Tensor) -> torch.Tensor:
    """Reflect-pad bottom/right to multiples of 4 with sizes the ONNX tracer keeps symbolic (no Python
    branch on the shape, unlike :func:`agents.networks.pad_to_multiple`, which would freeze the trace size)."""
    height, width = images.shape[-2:]
    return F.pad(images, (0, (4 - width % 4) % 4, 0, (4 - height % 4) % 4), mode="reflect")


def style_encoder_path(path: str | Path) -> Path:
    """The style encoder's graph exported beside the step graph ``path``: ``<stem>_style.onnx``.

    :param path: the step graph (``--out``).
    """
    path = Path(path)
    return path.with_name(f"{path.stem}_style{path.suffix or '.onnx'}")


class StyleEncoder(nn.Module):
    """RLMiniStyler's style branch as a plain module: ``style -> the style code's tensors`` (:data:`CODE_NAMES`).

    Equal to ``policy.actor.encode_style`` of the style image padded to multiples of 4.

    :param policy: the policy whose actor is exported (weights shared, not copied).
    """

    def __init__(self, policy: MiniStylerPolicy) -> None:
        super().__init__()
        self.actor = policy.actor

    def forward(self, style: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:param style: ``N x 3 x H_s x W_s`` RGB in ``[0, 1]``.
        :return: the code's tensors in the order of :data:`CODE_NAMES`."""
        code = self.actor.encode_style(_pad_to_multiple_of_4(style))
        return (*code.mod1_2, *code.mod1_3, *code.mod1, *code.mod2, code.x1, code.x2)


def style_code(tensors: tuple[torch.Tensor, ...]) -> StyleCode:
    """The :class:`StyleCode` of the builder from the tensors named in :data:`CODE_NAMES`.

    :param tensors: the style encoder's outputs, in order.
    """
    mods = [Modulation(tensors[i], tensors[i + 1]) for i in range(0, 8, 2)]
    return StyleCode(*mods, tensors[8], tensors[9])


class DeterministicStep(nn.Module):
    """One deterministic RLMiniStyler step as a plain module: ``(moving, style code) -> next image``.

    Equal to ``policy.act({"moving": moving, "style": style}, deterministic=True)[1]`` for the style whose
    code :class:`StyleEncoder` computed.

    :param policy: the policy whose actor and builder are exported (weights shared, not copied).
    """

    def __init__(self, policy: MiniStylerPolicy) -> None:
        super().__init__()
        self.actor = policy.actor
        self.builder = policy.builder
        self.residual = policy.residual_builder

    def forward(self, moving: torch.Tensor, *code: torch.Tensor) -> torch.Tensor:
        """:param moving: ``N x 3 x H x W`` RGB in ``[0, 1]``.
        :param code: the style code's tensors (:data:`CODE_NAMES`).
        :return: the next moving image, ``N x 3 x H x W`` in ``[0, 1]``."""
        height, width = moving.shape[-2:]
        padded = _pad_to_multiple_of_4(moving)
        mean, _ = self.actor(padded, style_code(code))
        image = self.builder(mean, style_code(code))
        if self.residual:  # MiniStylerPolicy(residual_builder=True): the moving image plus the builder's output
            image = image + padded
        return image[..., :height, :width].clamp(0.0, 1.0)


def onnx_session(
    path: str | Path, threads: int | None = None, providers: list[str] | None = None
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for ``path``.

    :param path: the ``.onnx`` file.
    :param threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
    :param providers: execution providers (default: CPU).
    """
    import onnxruntime as ort  # optional: rl-nst[bench] or pip install onnxruntime

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def max_difference(
    policy: MiniStylerPolicy, path: str | Path, seed: int = 0, encoder_path: str | Path | None = None
) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch's ``policy.act`` over :data:`CHECK_SIZES`
    (random images; two steps each, the second reusing the style code).

    :param policy: the exported policy (evaluated on its own device).
    :param path: the exported step graph.
    :param seed: seed of the random test images.
    :param encoder_path: the exported style encoder (default: :func:`style_encoder_path` of ``path``).
    """
    stylizer = OnnxRunner(path, encoder_path=encoder_path)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for height, width in CHECK_SIZES:
        moving = torch.rand(2, 3, height, width, generator=generator)
        style = torch.rand(2, 3, *CHECK_STYLE_SIZE, generator=generator)
        code = stylizer.encode(style.numpy())
        got = moving.numpy()
        for _ in range(2):
            with torch.no_grad():
                obs = {"moving": torch.from_numpy(got).to(policy.device), "style": style.to(policy.device)}
                expected = policy.act(obs, True)[1].cpu().numpy()
            got = stylizer(got, code)
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_step(
    policy: MiniStylerPolicy, out: str | Path, size: int = 64, atol: float = 1e-4, opset: int = 17
) -> float:
    """Export one deterministic step of ``policy`` to ``out`` and its style encoder beside it
    (:func:`style_encoder_path`), and check them against PyTorch; nothing is written if the check fails.

    :param policy: an RLMiniStyler-style policy (:class:`MiniStylerPolicy`).
    :param out: the step's ``.onnx`` file to write (folders are created).
    :param size: side of the example images traced (any size works afterwards: the axes are dynamic).
    :param atol: largest allowed absolute difference between ONNX Runtime and PyTorch.
    :param opset: ONNX opset version.
    :return: the measured largest difference.
    :raises TypeError: a policy that is not a :class:`MiniStylerPolicy`.
    :raises RuntimeError: ONNX Runtime and PyTorch disagree by more than ``atol``.
    """
    if not isinstance(policy, MiniStylerPolicy):
        raise TypeError(f"Only MiniStylerPolicy (RLMiniStyler) models export to ONNX, got {type(policy).__name__}.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    policy.set_training_mode(False)
    encoder = copy.deepcopy(StyleEncoder(policy)).cpu().eval()
    step = copy.deepcopy(DeterministicStep(policy)).cpu().eval()
    style = torch.rand(1, 3, size, size)
    with torch.no_grad():
        code = encoder(style)
    code_axes = {name: {0: "batch"} for name in CODE_NAMES[:8]}
    code_axes.update({name: {0: "batch", 2: "code_height", 3: "code_width"} for name in CODE_NAMES[8:]})
    image_axes = {0: "batch", 2: "height", 3: "width"}
    with ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding and deprecation notes
        step_file = stack.enter_context(atomic_path(out))
        encoder_file = stack.enter_context(atomic_path(style_encoder_path(out)))
        torch.onnx.export(
            encoder,
            (style,),
            str(encoder_file),
            input_names=["style"],
            output_names=list(CODE_NAMES),
            dynamic_axes={"style": {0: "batch", 2: "style_height", 3: "style_width"}, **code_axes},
            opset_version=opset,
            dynamo=False,
        )
        torch.onnx.export(
            step,
            (torch.rand(1, 3, size, size), *code),
            str(step_file),
            input_names=["moving", *CODE_NAMES],
            output_names=["next"],
            dynamic_axes={"moving": image_axes, "next": image_axes, **code_axes},
            opset_version=opset,
            dynamo=False,
        )
        difference = max_difference(policy, step_file, encoder_path=encoder_file)
        if difference > atol:
            raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.3g} (> {atol:g}) for {out}.")
    return difference


#: Environment variable naming the ONNX cache folder.
CACHE_ENV = "RL_NST_ONNX_CACHE"
#: Bumped when the exported graphs change, so that cached files of an older exporter are not reused.
EXPORT_VERSION = 1


def default_cache_dir() -> Path:
    """``$RL_NST_ONNX_CACHE``, else ``$XDG_CACHE_HOME/rl-nst/onnx`` (``~/.cache/rl-nst/onnx``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rl-nst" / "onnx"


def onnx_providers(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (CUDA's with the CPU's as fallback)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]


def weights_key(policy: MiniStylerPolicy) -> str:
    """A hash of the policy's actor and builder weights, its builder kind, the exporter's version and the
    library that makes the graphs.

    :param policy: the policy to export.
    """
    digest = hashlib.sha256()
    for module in (policy.actor, policy.builder):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    versions = (EXPORT_VERSION, policy.residual_builder, torch.__version__, False)
    digest.update(repr(versions).encode())
    return digest.hexdigest()[:16]


def cached_export(
    policy: MiniStylerPolicy,
    cache_dir: Path,
    export: Callable[[MiniStylerPolicy, Path], object] = export_step,
    tag: str = "",
) -> Path:
    """The exported step graph of ``policy`` (its style encoder beside it) in ``cache_dir``, exported there
    first if missing (with a note); stray partial files of killed exports are removed.

    :param policy: the policy (:class:`MiniStylerPolicy`).
    :param cache_dir: the cache folder (created).
    :param export: what writes the graphs (default :func:`export_step`; ``benchmarks.quantize`` passes its int8
        export).
    :param tag: added to the file name, naming what ``export`` makes differently.
    """
    path = cache_dir / f"{type(policy).__name__}-{weights_key(policy)}{tag}.onnx"
    if not (path.is_file() and style_encoder_path(path).is_file()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_files(cache_dir)
        export(policy, path)
        print(f"note: exported the model to {path} (reused by later calls).")
    return path


class OnnxRunner:
    """The exported graphs in ONNX Runtime as a :class:`~agents.inference.runners.StepRunner`: a style is encoded
    once (:meth:`prepare`, :meth:`encode`), then steps run with its code; moving images are ``1 x 3 x H x W``
    float32 arrays in ``[0, 1]``.

    :param path: the step graph (the export's ``--out``).
    :param device: where ONNX Runtime computes (CUDA needs the ``onnxruntime-gpu`` build).
    :param threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
    :param encoder_path: the style encoder's graph (default: :func:`style_encoder_path` of ``path``).
    """

    needs_style_image = True

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        encoder_path: str | Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        providers = onnx_providers(self.device)
        self.encoder = onnx_session(encoder_path or style_encoder_path(path), threads, providers)
        self.step_graph = onnx_session(path, threads, providers)

    def encode(self, style: np.ndarray) -> dict[str, np.ndarray]:
        """The style code of ``N`` style images, ``N x 3 x H_s x W_s`` float32 in ``[0, 1]``.

        :param style: the style images.
        """
        return dict(zip(CODE_NAMES, self.encoder.run(None, {"style": style})))

    def __call__(self, moving: np.ndarray, code: dict[str, np.ndarray]) -> np.ndarray:
        """One step: the next moving images, ``N x 3 x H x W`` float32 in ``[0, 1]``.

        :param moving: the moving images, ``N x 3 x H x W`` float32 in ``[0, 1]``.
        :param code: :meth:`encode` of their style images.
        """
        return self.step_graph.run(None, {"moving": moving, **code})[0]

    def prepare(self, style: np.ndarray, size: int | None = None) -> PreparedStyle:
        """The style image and its code from the style encoder.

        :param style: ``h x w x 3`` uint8 style image (any size; sides under the networks' minimum are stretched).
        :param size: the longer side the style is encoded at (:func:`~agents.inference.runners.resize_style`; ``None``:
            its own size).
        """
        image = self.load(at_least_min_side(resize_style(style, size)))
        return PreparedStyle(image, self.encode(image))

    def load(self, image: np.ndarray) -> np.ndarray:
        """``1 x 3 x H x W`` float32 in ``[0, 1]``.

        :param image: ``H x W x 3`` uint8.
        """
        return image_to_tensor(image, "cpu").numpy()

    def step(
        self, moving: np.ndarray, style: PreparedStyle | None, frame: int, step: int, deterministic: bool
    ) -> np.ndarray:
        """One deterministic step (see :meth:`~agents.inference.runners.StepRunner.step` for the arguments).

        :raises ValueError: ``deterministic`` off (the exported step uses the latent's mean) or no style.
        """
        if not deterministic or style is None:
            raise ValueError("the exported step is deterministic and needs a prepared style.")
        return self(moving, style.code)

    def image(self, moving: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 of a moving image.

        :param moving: ``1 x 3 x H x W`` float32.
        """
        return tensor_to_image(torch.from_numpy(moving))
