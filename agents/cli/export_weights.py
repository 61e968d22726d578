"""Write a trained RLMiniStyler model's actor and builder as a weights folder, the layout of the shipped models.

    python -m agents.export_weights runs/style_sac_NST-v0_1/model.zip --out my_weights
    python -m agents.stylize --model my_weights.zip ...       # the zip itself also works
    StyleSAC(...).load_pretrained("my_weights")                # start a new run from the folder

The folder holds ``actor.pth.tar`` and ``builder.pth.tar`` (float32 state dicts, 1.5 MB together): what
``--init`` and :meth:`MiniStylerPolicy.load_released <agents.style_sac.MiniStylerPolicy.load_released>` read,
without the critics, optimisers and replay buffer of a StyleSAC zip. This is how ``agents/pretrained/
rlministyler_ft128`` was made. Only models with the papers' builder export (a ``residual_builder`` model's
output adds the moving image, which the shipped layout does not record).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.cli import cli_main, fail
from agents.inference.models import load_policy
from agents.networks.pretrained import save_ministyler_weights
from agents.style_sac import MiniStylerPolicy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("model", help="a StyleSAC .zip of a MiniStylerPolicy (or a shipped model's name)")
    p.add_argument("--out", type=Path, required=True, help="the folder to write")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Export; a model that is missing, not RLMiniStyler's or residual ends it with one line and exit status 2.

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    policy = load_policy(args.model, device="cpu")
    if not isinstance(policy, MiniStylerPolicy):
        fail(f"{args.model}: expected an RLMiniStyler model (MiniStylerPolicy), got {type(policy).__name__}.")
    if policy.residual_builder:
        fail(f"{args.model}: a residual_builder model does not fit the shipped layout (the papers' builder).")
    folder = save_ministyler_weights(policy.actor, policy.builder, args.out)
    size_mb = sum(p.stat().st_size for p in folder.glob("*.pth.tar")) / 1e6
    print(f"Wrote {folder / 'actor.pth.tar'} and {folder / 'builder.pth.tar'} ({size_mb:.2f} MB).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
