"""Export one deterministic stylisation step (actor + builder) to ONNX, checked against PyTorch.

    python -m agents.export_onnx --model rlministyler --out rlministyler_step.onnx
    python -m agents.export_onnx --model runs/style_sac_NST-v0_1/model.zip --out mine.onnx
    python -m agents.export_onnx --model rlministyler --out rlministyler_int8.onnx --int8

Two graphs are written, so that a style image is encoded once for all its steps, frames and photos:

- ``<out stem>_style.onnx`` (:class:`StyleEncoder`): ``style`` (``N x 3 x H_s x W_s``) to the actor's style
  code, the tensors named in :data:`CODE_NAMES` (modulation weights and biases ``N x C x 1 x 1``, features
  ``x1``, ``x2`` ``N x 64 x H_s/4 x W_s/4``);
- ``--out`` (:class:`DeterministicStep`): ``moving`` (``N x 3 x H x W``) and the style code to ``next``
  (``N x 3 x H x W``): the builder's image for the mean latent, clamped to ``[0, 1]``, i.e.
  ``policy.act(..., deterministic=True)``.

Images are RGB float32 in ``[0, 1]``. Batch, height and width are dynamic (any size of at least 8 px; sides
that are not multiples of 4 are reflect-padded inside the graphs, as in PyTorch). Run ``k`` steps by feeding
``next`` back as ``moving`` with the same code (:class:`OnnxStylizer`). At export the ONNX Runtime output is
compared with PyTorch's at two sizes (one not a multiple of 4); a difference above ``--atol`` (default 1e-4)
is an error and nothing is written.

``--int8`` writes the step graph quantised to int8 by ONNX Runtime's static quantisation, calibrated on the
built-in sample images (:mod:`agents.quantize`), with the float style encoder beside it, and prints the mean and
largest difference to the float step on the calibration samples (no bound is enforced: int8 trades accuracy for
size and, where the CPU has int8 instructions, speed).
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from agents.cli import atomic_path, cli_main, float_range, int_range
from agents.models import load_policy
from agents.networks import Modulation, StyleCode
from agents.style_sac import MiniStylerPolicy

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
) -> ort.InferenceSession:
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


class OnnxStylizer:
    """The exported graphs in ONNX Runtime: encode a style once (:meth:`encode`), then run steps with its code.

    :param path: the step graph (``--out`` of the export).
    :param threads: intra-op threads (``None``: ONNX Runtime's default).
    :param providers: execution providers (default: CPU).
    :param encoder_path: the style encoder's graph (default: :func:`style_encoder_path` of ``path``).
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: list[str] | None = None,
        encoder_path: str | Path | None = None,
    ) -> None:
        self.encoder = onnx_session(encoder_path or style_encoder_path(path), threads, providers)
        self.step = onnx_session(path, threads, providers)

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
        return self.step.run(None, {"moving": moving, **code})[0]


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
    stylizer = OnnxStylizer(path, encoder_path=encoder_path)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", default="rlministyler", help="released model name or a StyleSAC .zip")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument(
        "--atol", type=float_range(0.0, 1.0), default=1e-4, help="largest allowed ONNX Runtime vs PyTorch difference"
    )
    p.add_argument("--opset", type=int_range(*OPSETS), default=17, help="ONNX opset version")
    p.add_argument("--int8", action="store_true", help="quantise the step graph to int8 (agents.quantize)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Export, check, and print the files, their size and the measured difference; bad input (a missing or
    incompatible model, a failed check) ends it with one line and exit status 2.

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    policy = load_policy(args.model, device="cpu")
    try:
        if args.int8:
            from agents.quantize import export_int8

            mean, largest = export_int8(policy, args.out, opset=args.opset)
            check = f"int8 vs float step on the calibration samples: mean |difference| {mean:.3f}, max {largest:.3f}"
        else:
            difference = export_step(policy, args.out, atol=args.atol, opset=args.opset)
            check = f"ONNX Runtime vs PyTorch: max |difference| {difference:.2e}"
    except RuntimeError as exc:
        raise SystemExit(f"--model {args.model}: {exc}") from exc
    size_mb = (args.out.stat().st_size + style_encoder_path(args.out).stat().st_size) / 1e6
    print(f"Wrote {args.out} and {style_encoder_path(args.out)} ({size_mb:.2f} MB); {check}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
