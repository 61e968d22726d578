"""Export one deterministic stylisation step (actor + builder) to ONNX, checked against PyTorch.

    python -m agents.export_onnx --model rlministyler --out rlministyler_step.onnx
    python -m agents.export_onnx --model runs/style_sac_NST-v0_1/model.zip --out mine.onnx

The ONNX graph maps ``moving`` (``N x 3 x H x W``) and ``style`` (``N x 3 x H_s x W_s``), RGB float32 in
``[0, 1]``, to ``next`` (``N x 3 x H x W``): the builder's image for the mean latent, clamped to ``[0, 1]``, i.e.
``policy.act(..., deterministic=True)``. Batch, height and width are dynamic (any size of at least 8 px; sides
that are not multiples of 4 are reflect-padded inside the graph, as in PyTorch). Run ``k`` steps by feeding
``next`` back as ``moving``. At export the ONNX Runtime output is compared with PyTorch's at two sizes (one
not a multiple of 4); a difference above ``--atol`` (default 1e-4) is an error.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from agents.models import ModelLoadError, load_policy
from agents.style_sac import MiniStylerPolicy

#: ``(height, width)`` of the moving images used to check the export (the second is not a multiple of 4).
CHECK_SIZES = ((64, 64), (50, 70))
#: Side of the style images used to check the export.
CHECK_STYLE_SIZE = (56, 44)


def _pad_to_multiple_of_4(images: torch.Tensor) -> torch.Tensor:
    """Reflect-pad bottom/right to multiples of 4 with sizes the ONNX tracer keeps symbolic (no Python
    branch on the shape, unlike :func:`agents.networks.pad_to_multiple`, which would freeze the trace size)."""
    height, width = images.shape[-2:]
    return F.pad(images, (0, (4 - width % 4) % 4, 0, (4 - height % 4) % 4), mode="reflect")


class DeterministicStep(nn.Module):
    """One deterministic RLMiniStyler step as a plain module: ``(moving, style) -> next image``.

    Equal to ``policy.act({"moving": moving, "style": style}, deterministic=True)[1]``.

    :param policy: the policy whose actor and builder are exported (weights shared, not copied).
    """

    def __init__(self, policy: MiniStylerPolicy) -> None:
        super().__init__()
        self.actor = policy.actor
        self.builder = policy.builder

    def forward(self, moving: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """:param moving: ``N x 3 x H x W`` RGB in ``[0, 1]``. :param style: ``N x 3 x H_s x W_s`` RGB in ``[0, 1]``.
        :return: the next moving image, ``N x 3 x H x W`` in ``[0, 1]``."""
        height, width = moving.shape[-2:]
        code = self.actor.encode_style(_pad_to_multiple_of_4(style))
        mean, _ = self.actor(_pad_to_multiple_of_4(moving), code)
        return self.builder(mean, code)[..., :height, :width].clamp(0.0, 1.0)


def onnx_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session for ``path``.

    :param path: the ``.onnx`` file.
    :param threads: intra-op threads (``None``: ONNX Runtime's default, one per physical core).
    :param providers: execution providers (default: CPU).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def max_difference(policy: MiniStylerPolicy, path: str | Path, seed: int = 0) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch over :data:`CHECK_SIZES` (random images).

    :param policy: the exported policy (evaluated on its own device).
    :param path: the exported ``.onnx`` file.
    :param seed: seed of the random test images.
    """
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for height, width in CHECK_SIZES:
        moving = torch.rand(2, 3, height, width, generator=generator)
        style = torch.rand(2, 3, *CHECK_STYLE_SIZE, generator=generator)
        with torch.no_grad():
            expected = policy.act({"moving": moving.to(policy.device), "style": style.to(policy.device)}, True)[1]
        got = session.run(None, {"moving": moving.numpy(), "style": style.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected.cpu().numpy()).max()))
    return worst


def export_step(policy: MiniStylerPolicy, out: str | Path, size: int = 64, atol: float = 1e-4, opset: int = 17) -> float:
    """Export one deterministic step of ``policy`` to ``out`` and check it against PyTorch.

    :param policy: an RLMiniStyler-style policy (:class:`MiniStylerPolicy`).
    :param out: the ``.onnx`` file to write (folders are created).
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
    step = copy.deepcopy(DeterministicStep(policy)).cpu().eval()
    example = (torch.rand(1, 3, size, size), torch.rand(1, 3, size, size))
    axes = {"moving": {0: "batch", 2: "height", 3: "width"}, "style": {0: "batch", 2: "style_height", 3: "style_width"},
            "next": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding and deprecation notes
        torch.onnx.export(step, example, str(out), input_names=["moving", "style"], output_names=["next"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    difference = max_difference(policy, out)
    if difference > atol:
        raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.3g} (> {atol:g}) for {out}.")
    return difference


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="rlministyler", help="released model name or a StyleSAC .zip")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed ONNX Runtime vs PyTorch difference")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export, check, and print the file, its size and the measured difference."""
    args = parse_args(argv)
    try:
        policy = load_policy(args.model, device="cpu")
        difference = export_step(policy, args.out, atol=args.atol, opset=args.opset)
    except (ModelLoadError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size_mb = args.out.stat().st_size / 1e6
    print(f"Wrote {args.out} ({size_mb:.2f} MB); ONNX Runtime vs PyTorch: max |difference| {difference:.2e}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
