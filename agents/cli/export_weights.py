"""Write a trained model's weights as a weights folder (the shipped models' layout) or a safetensors file.

    python -m agents.export_weights runs/style_sac_NST-v0_1/model.zip --out my_weights
    StyleSAC(...).load_pretrained("my_weights")                # start a new run from the folder
    python -m agents.export_weights model.zip --format safetensors --out model.safetensors
    python -m agents.stylize --model model.safetensors ...     # loads without unpickling anything

``--format folder`` (the default) writes ``actor.pth.tar`` and ``builder.pth.tar`` (float32 state dicts,
1.5 MB together): what ``--init`` and :meth:`MiniStylerPolicy.load_released
<agents.style_sac.MiniStylerPolicy.load_released>` read, without the critics, optimisers and replay buffer of a
StyleSAC zip. This is how ``agents/pretrained/rlministyler_ft128`` was made. Only RLMiniStyler models with the
papers' builder (a ``residual_builder`` model's output adds the moving image, which that layout does not
record).

``--format safetensors`` writes any StyleSAC policy (RLMiniStyler, RL-NST, RL-NST video) as one safetensors
file: the policy's tensors, and in its header the manifest (class, constructor arguments, spaces) that
:func:`~agents.inference.models.load_policy` rebuilds it from. ``--allow-pickle`` converts a zip that the
inference path refuses because loading it would unpickle (an older or foreign file): it is then loaded with
``StyleSAC.load``, which runs any code the file carries, so only on a trusted machine, for a trusted file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.cli import cli_main, fail
from agents.inference.model_files import save_safetensors_policy
from agents.inference.models import load_policy
from agents.networks.pretrained import save_ministyler_weights
from agents.style_sac import MiniStylerPolicy

#: What ``--format`` takes.
FORMATS = ("folder", "safetensors")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring).

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("model", help="a StyleSAC .zip or .safetensors policy (or a shipped model's name)")
    p.add_argument("--out", type=Path, required=True, help="the folder (folder) or file (safetensors) to write")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="folder",
        help="folder: actor.pth.tar + builder.pth.tar (RLMiniStyler); safetensors: any policy, one file",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a zip that needs unpickling (runs code the file carries: trusted files only)",
    )
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Export; a model that is missing, refused or does not fit the format ends it with one line and exit 2.

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    policy = load_policy(args.model, device="cpu", allow_pickle=args.allow_pickle)
    if args.format == "safetensors":
        out = args.out if args.out.suffix else args.out.with_suffix(".safetensors")
        save_safetensors_policy(policy, out)
        print(f"Wrote {out} ({type(policy).__name__}, {out.stat().st_size / 1e6:.2f} MB).")
        return 0
    if not isinstance(policy, MiniStylerPolicy):
        fail(
            f"{args.model}: --format folder takes an RLMiniStyler model (MiniStylerPolicy), got "
            f"{type(policy).__name__}; --format safetensors takes any."
        )
    if policy.residual_builder:
        fail(
            f"{args.model}: a residual_builder model does not fit the folder layout (the papers' builder); "
            "--format safetensors takes it."
        )
    folder = save_ministyler_weights(policy.actor, policy.builder, args.out)
    size_mb = sum(p.stat().st_size for p in folder.glob("*.pth.tar")) / 1e6
    print(f"Wrote {folder / 'actor.pth.tar'} and {folder / 'builder.pth.tar'} ({size_mb:.2f} MB).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
