"""Train any of our RL algorithms on NST-v0: ``python -m agents.train --algo ALGO`` (RL Baselines3 Zoo style).

    python -m agents.train --algo style_sac                      # = python -m agents.train_sac
    python -m agents.train --algo sac -n 1500 --seed 1           # stock SB3 SAC with MultiInputPolicy
    python -m agents.train --algo ppo --hyperparams n_steps:200

``--algo`` is one of ``style_sac`` (ours, :mod:`agents.cli.train_sac`), ``sac``, ``td3``, ``ppo``, ``a2c``
(Stable-Baselines3) and ``tqc`` (sb3-contrib). Hyper-parameters come from ``agents/training/hyperparams/<algo>.yml``
(one entry per env id); every other flag is :mod:`agents.cli.train_sac`'s (``-n``, ``--image-size``, ``--seed``,
``-f``, ``--hyperparams``, ``--resume``, ...; ``--init`` and ``--distributed`` are StyleSAC's only). A run folder
``<log folder>/<algo>_<env>_<k>/`` holds ``config.yml``, ``args.yml``, ``monitor/``, ``logs/``, ``checkpoints/`` and
``model.zip``.

Stock algorithms see the env as it is: a Dict of two uint8 images (each through SB3's NatureCNN, which needs
images of at least 36 px) and a ``3 x H x W`` image action, produced by a linear layer of ``3 * H * W``
outputs, so their networks and replay buffers grow with the image area: use 64 px on a CPU.
"""

from __future__ import annotations

import argparse
import sys

from agents.cli import cli_main
from agents.cli.train_sac import build_parser, train
from agents.training.config import ALGOS


def parser() -> argparse.ArgumentParser:
    """:func:`agents.cli.train_sac.build_parser`'s arguments plus ``--algo``."""
    p = build_parser(__doc__.split("\n")[0])
    p.add_argument("--algo", choices=sorted(ALGOS), default="style_sac", help="the RL algorithm")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.train``; bad input ends it with a one-line error and exit status 2."""
    return train(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
