r"""The papers' ablation: the actor-builder trained with RL (StyleSAC) and without it, on the same budget.

    python -m benchmarks.ablation -n 300 --image-size 64          # trains both variants, same seed and data
    python -m benchmarks.quality --model rlministyler runs/ablation/*/model.zip --name quality_ablation \
        --strengths --gatys-iterations                              # then their quality (no peer, no Gatys)

- **RL** (``rl``): :class:`~agents.style_sac.StyleSAC` with its defaults (``agents/training/hyperparams/style_sac.yml``):
  every env step, a critic update, a generative update of actor + builder, and every 4th step an actor
  (``alpha log pi - Q``) and temperature update.
- **no RL** (``no_rl``): ``StyleSAC(..., control_learning=False)``, the same actor-builder, data collection,
  replay buffer (with the env's VGG-19 features), optimiser and generative loss (content, style, contrastive,
  uncertainty-weighted) in the same ``train()``, with its critic, actor and temperature phases switched off:
  the actor-builder learns from the generative loss alone.

Both start from scratch (or ``--init rlministyler``) with the same seed, so they see the same first episodes.
Each writes a run folder ``LOG_FOLDER/{rl,no_rl}_<size>px_<steps>steps/`` (``model.zip``, ``monitor/``,
``logs/progress.csv``); the training times go to ``benchmarks/results/ablation.{md,csv,json}``. The papers
train for ~10^5 updates at 256 px on a GPU; a CPU run of a few hundred steps is a *short* ablation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.logger import configure

from agents.style_sac import StyleSAC
from agents.training.config import algorithm_kwargs, parse_overrides
from agents.training.experiment import make_env
from benchmarks.common import (
    Report,
    benchmark_parser,
    configure_torch,
    machine_info,
    settings_of,
    style_sac_config,
)

#: Variant name -> StyleSAC arguments that make it.
VARIANTS: dict[str, dict[str, Any]] = {"rl": {}, "no_rl": {"control_learning": False}}


def train_variant(
    variant: str,
    n_timesteps: int,
    image_size: int,
    log_folder: Path,
    seed: int = 0,
    device: str = "cpu",
    init: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one variant with StyleSAC's ``NST-v0`` hyper-parameters and save ``model.zip``.

    :param variant: ``"rl"`` or ``"no_rl"`` (:data:`VARIANTS`).
    :param n_timesteps: env steps (one update per step after ``learning_starts``).
    :param image_size: training image side in px.
    :param log_folder: parent of the run folder.
    :param seed: seed of env and networks.
    :param device: where networks and VGG run.
    :param init: start actor + builder from released weights (``"rlministyler"``) instead of scratch.
    :param overrides: hyper-parameters replacing the YAML's (nested dict, as ``--hyperparams`` gives).
    :return: a result row: variant, run folder, model path, steps, updates, seconds, final episode reward.
    """
    config = style_sac_config(image_size, seed, overrides)
    run_dir = log_folder / f"{variant}_{image_size}px_{n_timesteps}steps{'_' + init if init else ''}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yml").write_text(yaml.safe_dump({**config, "variant": variant, "init": init}, sort_keys=False))
    env = make_env(config, run_dir, device, resume=False)
    model = StyleSAC(
        config["policy"], env, seed=seed, device=device, **{**algorithm_kwargs(config), **VARIANTS[variant]}
    )
    if init:
        model.load_pretrained(init)
    model.set_logger(configure(str(run_dir / "logs"), ["csv"]))
    start = time.perf_counter()
    model.learn(n_timesteps)
    seconds = time.perf_counter() - start
    model.save(run_dir / "model.zip")
    env.close()
    rewards = [info["r"] for info in model.ep_info_buffer]
    return {
        "variant": variant,
        "model": str(run_dir / "model.zip"),
        "image_size": image_size,
        "init": init or "scratch",
        "env_steps": model.num_timesteps,
        "updates": model._n_updates,
        "train_minutes": seconds / 60,
        "s_per_step": seconds / max(1, n_timesteps),
        "last_10_episode_reward": float(np.mean(rewards[-10:])) if rewards else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(
        __doc__,
        device="cpu",
        device_help="cpu, cuda, ...",
        seed_help="seed of envs and networks",
        out_help="folder of ablation.{md,csv,json}",
    )
    p.add_argument("-n", "--n-timesteps", type=int, default=300, help="env steps per variant")
    p.add_argument("--image-size", type=int, default=64, help="training image side in px")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["rl", "no_rl"])
    p.add_argument("--init", default=None, help="start from released weights (rlministyler) instead of scratch")
    p.add_argument("-f", "--log-folder", type=Path, default=Path("runs/ablation"), help="parent of the run folders")
    p.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY:VALUE", help="override hyper-parameters")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train the variants one after the other and write the training table."""
    args = parse_args(argv)
    configure_torch(args.threads)
    machine = machine_info(args.device)
    overrides = parse_overrides(args.hyperparams)
    rows = [
        train_variant(
            v, args.n_timesteps, args.image_size, args.log_folder, args.seed, args.device, args.init, overrides
        )
        for v in args.variants
    ]
    models = " ".join(row["model"] for row in rows)
    Report(
        name="ablation",
        title="Actor-builder with and without RL: training runs",
        columns=[
            "variant",
            "init",
            "image_size",
            "env_steps",
            "updates",
            "train_minutes",
            "s_per_step",
            "last_10_episode_reward",
            "model",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                f"Short ablation: {args.n_timesteps} env steps per variant at {args.image_size} px on {args.device} "
                "(the papers train ~10^5 updates at 256 px). Same seed, data and hyper-parameters "
                "(`agents/training/hyperparams/style_sac.yml`); `no_rl` drops the critic, actor and temperature updates."
            ),
            "Quality of the two: `python -m benchmarks.quality --name quality_ablation --strengths "
            f"--gatys-iterations --model rlministyler {models}`.",
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
