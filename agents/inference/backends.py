"""Which engine runs the stylisation steps: PyTorch or ONNX Runtime (``--backend auto|torch|onnx``).

- ``torch``: :class:`~agents.inference.runners.TorchRunner`, the policy under ``torch.inference_mode`` in
  ``channels_last`` memory format; ``half`` computes in float16 (CUDA only; not CUDA's default until its outputs
  are checked on a GPU: ``tests/test_backends.py::test_float16_on_cuda_stays_within_one_level``).
- ``onnx``: :class:`~agents.inference.onnx.OnnxRunner`, the exported graphs (:mod:`agents.inference.onnx`,
  cached by :func:`~agents.inference.onnx.cached_export`) in ONNX Runtime. Only RLMiniStyler models export, and
  the exported step is the deterministic one.
- ``auto``: ``onnx`` where it can run (``onnx`` and ``onnxruntime`` importable, a :class:`MiniStylerPolicy`, no
  sampling or float16, and for CUDA an ONNX Runtime build with its CUDA provider), else ``torch``, with a
  one-line note saying why.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agents.inference.onnx import OnnxRunner, cached_export, default_cache_dir
from agents.inference.runners import StepRunner, TorchRunner
from agents.style_sac import ActorBuilderPolicy, MiniStylerPolicy

BACKENDS = ("auto", "torch", "onnx")


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
) -> StepRunner:
    """The runner of ``policy`` for ``--backend`` (see the module docstring), printing a one-line note when
    ``auto`` falls back to PyTorch.

    :param policy: the loaded policy.
    :param backend: one of :data:`BACKENDS`.
    :param cache_dir: the ONNX cache folder (default: :func:`default_cache_dir`).
    :param sample: latents are to be sampled (PyTorch only).
    :param half: float16 (PyTorch on CUDA only).
    :raises ValueError: a combination that cannot run (``--backend onnx`` where ONNX Runtime cannot, ``--half``
        off CUDA); the message is one line.
    """
    if half and policy.device.type != "cuda":
        raise ValueError(f"--half needs a CUDA device, not {policy.device}.")
    reason = None if backend == "torch" else onnx_unusable(policy, sample, half)
    if backend == "onnx" and reason:
        raise ValueError(f"--backend onnx: {reason}.")
    if backend == "torch" or reason:
        if backend == "auto":
            print(f"note: running in PyTorch: {reason}.")
        return TorchRunner(policy, channels_last=True, half=half)
    try:
        path = cached_export(policy, cache_dir or default_cache_dir())  # type: ignore[arg-type]
    except RuntimeError as exc:  # the export's check against PyTorch failed
        raise ValueError(f"ONNX export: {exc}") from exc
    return OnnxRunner(path, policy.device)
