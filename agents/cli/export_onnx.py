"""Export one deterministic stylisation step (actor + builder) to ONNX, checked against PyTorch.

    python -m agents.export_onnx --model rlministyler --out rlministyler_step.onnx
    python -m agents.export_onnx --model runs/style_sac_NST-v0_1/model.zip --out mine.onnx

Writes ``--out`` (the step) and ``<out stem>_style.onnx`` (the style encoder) beside it
(:mod:`agents.inference.onnx`). At export the ONNX Runtime output is compared with PyTorch's at two sizes (one not a
multiple of 4); a difference above ``--atol`` is an error and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.cli import cli_main, float_range, int_range
from agents.errors import ModelLoadError
from agents.inference.models import load_policy
from agents.inference.onnx import OPSETS, export_step, style_encoder_path


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
        difference = export_step(policy, args.out, atol=args.atol, opset=args.opset)
    except RuntimeError as exc:
        raise ModelLoadError(f"--model {args.model}: {exc}") from exc
    size_mb = (args.out.stat().st_size + style_encoder_path(args.out).stat().st_size) / 1e6
    print(
        f"Wrote {args.out} and {style_encoder_path(args.out)} ({size_mb:.2f} MB); "
        f"ONNX Runtime vs PyTorch: max |difference| {difference:.2e}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
