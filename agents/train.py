"""Train any of our RL algorithms on NST-v0: ``python -m agents.train --algo ALGO`` (RL Baselines3 Zoo style).

    python -m agents.train --algo style_sac                      # = python -m agents.train_sac
    python -m agents.train --algo sac -n 1500 --seed 1           # stock SB3 SAC with MultiInputPolicy
    python -m agents.train --algo ppo --hyperparams n_steps:200

``--algo`` is one of ``style_sac`` (ours, :mod:`agents.train_sac`), ``sac``, ``td3``, ``ppo``, ``a2c``
(Stable-Baselines3) and ``tqc`` (sb3-contrib). Hyper-parameters come from ``agents/hyperparams/<algo>.yml``
(one entry per env id); every other flag is :mod:`agents.train_sac`'s (``-n``, ``--image-size``, ``--seed``,
``-f``, ``--hyperparams``, ``--resume``, ...; ``--amp`` and ``--init`` are StyleSAC's only). A run folder
``<log folder>/<algo>_<env>_<k>/`` holds ``config.yml``, ``monitor/``, ``logs/``, ``checkpoints/`` and
``model.zip``.

Stock algorithms see the env as it is: a Dict of two uint8 images (each through SB3's NatureCNN, which needs
images of at least 36 px) and a ``3 x H x W`` image action, produced by a linear layer of ``3 * H * W``
outputs, so their networks and replay buffers grow with the image area: use 64 px on a CPU.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import (
    ActionNoise,
    NormalActionNoise,
    OrnsteinUhlenbeckActionNoise,
)

from agents import train_sac
from agents.cli import cli_main
from agents.train_sac import (
    build_parser,
    discard_on_error,
    fit,
    load_checkpoint,
    make_env,
    make_model,
    prepare_run,
    save_model,
)

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
#: ``--algo`` name -> ``"module:Class"`` of the algorithm (imported on use: sb3-contrib is optional).
ALGOS = {
    "style_sac": "agents.style_sac:StyleSAC",
    "sac": "stable_baselines3:SAC",
    "td3": "stable_baselines3:TD3",
    "ppo": "stable_baselines3:PPO",
    "a2c": "stable_baselines3:A2C",
    "tqc": "sb3_contrib:TQC",
}
#: RL Zoo's ``noise_type`` values.
NOISES: dict[str, type[ActionNoise]] = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The algorithm class of an ``--algo`` name.

    :param name: a key of :data:`ALGOS`.
    :raises SystemExit: an unknown name, or sb3-contrib missing for ``tqc``.
    """
    if name not in ALGOS:
        raise SystemExit(f"Unknown algorithm {name!r}; expected one of {sorted(ALGOS)}.")
    module, cls = ALGOS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise SystemExit(f"--algo {name} needs {module}: pip install 'rl-nst[bench]' ({exc}).") from exc


def action_noise(config: dict[str, Any], action_space: spaces.Box) -> ActionNoise | None:
    """RL Zoo's ``noise_type`` / ``noise_std`` entries as an SB3 action noise (``None`` without them).

    :param config: the run configuration.
    :param action_space: the env's action space (the noise has its shape).
    """
    kind = config.get("noise_type")
    if kind is None:
        return None
    if kind not in NOISES:
        raise SystemExit(f"Unknown noise_type {kind!r}; expected one of {sorted(NOISES)}.")
    shape = action_space.shape
    return NOISES[kind](mean=np.zeros(shape), sigma=np.full(shape, float(config.get("noise_std", 0.1))))


def run(args: argparse.Namespace) -> int:
    """Train ``args.algo`` as ``args`` say; return the exit status (130: interrupted).

    :param args: :func:`agents.train_sac.build_parser`'s arguments plus ``algo``.
    """
    if args.algo == "style_sac":
        return train_sac.run(args)
    if args.amp or args.init:
        raise SystemExit("--amp and --init are StyleSAC options (--algo style_sac).")
    algo_class = algorithm_class(args.algo)
    torch.set_flush_denormal(True)
    config, run_dir, checkpoint = prepare_run(args, args.algo, HYPERPARAMS_DIR / f"{args.algo}.yml")
    with discard_on_error(run_dir, new=checkpoint is None):
        env = make_env(config, run_dir, args.device, resume=checkpoint is not None)
        if checkpoint is not None:
            model = load_checkpoint(algo_class, checkpoint, env, args.device)
        else:
            noise = action_noise(config, env.action_space)  # type: ignore[arg-type]
            model = make_model(algo_class, config, env, args, **({"action_noise": noise} if noise is not None else {}))
    if not fit(model, config, run_dir, args, f"python -m agents.train --algo {args.algo}"):
        return 130
    save_model(model, run_dir / "model.zip")
    print(f"Saved {run_dir / 'model.zip'}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """:func:`agents.train_sac.build_parser`'s arguments plus ``--algo``."""
    parser = build_parser(__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=sorted(ALGOS), default="style_sac", help="the RL algorithm")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.train``; bad input ends it with a one-line error and exit status 2."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
