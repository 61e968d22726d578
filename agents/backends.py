"""Which engine runs the stylisation steps: PyTorch or ONNX Runtime (``--backend auto|torch|onnx``).

- ``torch``: :class:`~agents.inference.TorchRunner`, the policy under ``torch.inference_mode`` in
  ``channels_last`` memory format; ``--half`` computes in float16 (CUDA only). float16 is not CUDA's default:
  whether its outputs stay within 1/255 of float32 has not been checked on a GPU yet (the ``gpu``-marked
  ``tests/test_backends.py::test_float16_on_cuda_stays_within_one_level`` checks it); the CPU stays float32.
- ``onnx``: :class:`OnnxRunner`, the graphs of :mod:`agents.export_onnx` (a step graph and a style encoder, so
  a style is encoded once) in ONNX Runtime; ``int8=True`` uses the int8 step graph (:mod:`agents.quantize`;
  ``benchmarks.quality --int8`` only: it was slower than float on our CPU, README "Speed and size"). Only
  RLMiniStyler models (:class:`MiniStylerPolicy`) export, and the exported step is the deterministic one.
- ``auto``: ``onnx`` where it can run (``onnx`` and ``onnxruntime`` importable, a :class:`MiniStylerPolicy`, no
  ``--sample`` or ``--half``, and for CUDA an ONNX Runtime build with its CUDA provider), else ``torch``, with a
  one-line note saying why.

The exported graphs are cached (:func:`cached_export`) under ``--onnx-cache``, default ``$RL_NST_ONNX_CACHE``
or ``~/.cache/rl-nst/onnx``: a file per model, named by a hash of its weights and of the export's settings and
library versions, written once (atomically) and reused by later calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from agents.cli import remove_partial_files
from agents.inference import (
    PreparedStyle,
    StepRunner,
    TorchRunner,
    at_least_min_side,
    image_to_tensor,
    resize_style,
    tensor_to_image,
)
from agents.style_sac import ActorBuilderPolicy, MiniStylerPolicy

BACKENDS = ("auto", "torch", "onnx")
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


def weights_key(policy: MiniStylerPolicy, int8: bool) -> str:
    """A hash of the policy's actor and builder weights, its builder kind, the exporter's version and the
    libraries that make the graphs (ONNX Runtime's too for int8, which quantises with it).

    :param policy: the policy to export.
    :param int8: the key of the int8 export.
    """
    import onnxruntime

    digest = hashlib.sha256()
    for module in (policy.actor, policy.builder):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    versions = (EXPORT_VERSION, policy.residual_builder, torch.__version__, int8 and onnxruntime.__version__)
    digest.update(repr(versions).encode())
    return digest.hexdigest()[:16]


def cached_export(policy: MiniStylerPolicy, cache_dir: Path, int8: bool = False) -> Path:
    """The exported step graph of ``policy`` (its style encoder beside it) in ``cache_dir``, exported there
    first if missing (with a note); stray partial files of killed exports are removed.

    :param policy: the policy (:class:`MiniStylerPolicy`).
    :param cache_dir: the cache folder (created).
    :param int8: the int8 step graph (:func:`agents.quantize.export_int8`) instead of the float one.
    """
    from agents.export_onnx import export_step, style_encoder_path

    path = cache_dir / f"{type(policy).__name__}-{weights_key(policy, int8)}{'-int8' if int8 else ''}.onnx"
    if not (path.is_file() and style_encoder_path(path).is_file()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_files(cache_dir)
        if int8:
            from agents.quantize import export_int8

            export_int8(policy, path)
        else:
            export_step(policy, path)
        print(f"note: exported the model to {path} (reused by later calls).")
    return path


class OnnxRunner:
    """The exported graphs in ONNX Runtime as a :class:`~agents.inference.StepRunner`; moving images are
    ``1 x 3 x H x W`` float32 arrays in ``[0, 1]``.

    :param path: the step graph (its style encoder beside it).
    :param device: where ONNX Runtime computes (CUDA needs the ``onnxruntime-gpu`` build).
    :param threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
    """

    needs_style_image = True

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        from agents.export_onnx import OnnxStylizer

        self.device = torch.device(device)
        self.stylizer = OnnxStylizer(path, threads, onnx_providers(self.device))

    def prepare(self, style: np.ndarray, size: int | None = None) -> PreparedStyle:
        """The style image and its code from the style encoder.

        :param style: ``h x w x 3`` uint8 style image (any size; sides under the networks' minimum are stretched).
        :param size: the longer side the style is encoded at (:func:`~agents.inference.resize_style`; ``None``:
            its own size).
        """
        image = self.load(at_least_min_side(resize_style(style, size)))
        return PreparedStyle(image, self.stylizer.encode(image))

    def load(self, image: np.ndarray) -> np.ndarray:
        """``1 x 3 x H x W`` float32 in ``[0, 1]``.

        :param image: ``H x W x 3`` uint8.
        """
        return image_to_tensor(image, "cpu").numpy()

    def step(
        self, moving: np.ndarray, style: PreparedStyle | None, frame: int, step: int, deterministic: bool
    ) -> np.ndarray:
        """One deterministic step (see :meth:`~agents.inference.StepRunner.step` for the arguments).

        :raises ValueError: ``deterministic`` off (the exported step uses the latent's mean) or no style.
        """
        if not deterministic or style is None:
            raise ValueError("the exported step is deterministic and needs a prepared style.")
        return self.stylizer(moving, style.code)

    def image(self, moving: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 of a moving image.

        :param moving: ``1 x 3 x H x W`` float32.
        """
        return tensor_to_image(torch.from_numpy(moving))


def onnx_unusable(policy: ActorBuilderPolicy, sample: bool, half: bool) -> str | None:
    """Why ONNX Runtime cannot run ``policy`` as asked, or ``None`` if it can.

    :param policy: the loaded policy (its device is where ONNX Runtime would compute).
    :param sample: latents are to be sampled (``--sample``).
    :param half: float16 was asked for (``--half``, PyTorch's).
    """
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnx and onnxruntime are not installed (pip install onnx onnxruntime)"
    if not isinstance(policy, MiniStylerPolicy):
        return f"only RLMiniStyler models (MiniStylerPolicy) export to ONNX, not {type(policy).__name__}"
    if sample:
        return "--sample draws random latents, the exported step uses their mean"
    if half:
        return "--half is PyTorch's float16"
    import onnxruntime

    if policy.device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime build has no CUDA provider (pip install onnxruntime-gpu)"
    return None


def make_runner(
    policy: ActorBuilderPolicy,
    backend: str = "auto",
    cache_dir: Path | None = None,
    sample: bool = False,
    half: bool = False,
    int8: bool = False,
) -> StepRunner:
    """The runner of ``policy`` for ``--backend`` (see the module docstring), printing a one-line note when
    ``auto`` falls back to PyTorch.

    :param policy: the loaded policy.
    :param backend: one of :data:`BACKENDS`.
    :param cache_dir: the ONNX cache folder (default: :func:`default_cache_dir`).
    :param sample: latents are to be sampled (PyTorch only).
    :param half: float16 (PyTorch on CUDA only).
    :param int8: the int8 step graph (ONNX Runtime only).
    :raises ValueError: a combination that cannot run (``--backend onnx`` where ONNX Runtime cannot, ``--int8``
        without it, ``--half`` off CUDA); the message is one line.
    """
    if half and policy.device.type != "cuda":
        raise ValueError(f"--half needs a CUDA device, not {policy.device}.")
    reason = None if backend == "torch" else onnx_unusable(policy, sample, half)
    if int8 and (backend == "torch" or reason):
        raise ValueError(f"--int8 needs ONNX Runtime: {reason or 'not with --backend torch'}.")
    if backend == "onnx" and reason:
        raise ValueError(f"--backend onnx: {reason}.")
    if backend == "torch" or reason:
        if backend == "auto":
            print(f"note: running in PyTorch: {reason}.")
        return TorchRunner(policy, channels_last=True, half=half)
    try:
        path = cached_export(policy, cache_dir or default_cache_dir(), int8)  # type: ignore[arg-type]
    except RuntimeError as exc:  # the export's check against PyTorch failed
        raise ValueError(f"ONNX export: {exc}") from exc
    return OnnxRunner(path, policy.device)
