"""RL algorithms on NST-v0 with the same budget: StyleSAC against stock SB3 / sb3-contrib algorithms.

    python -m benchmarks.compare_algorithms                      # 6 algorithms x 3 seeds, 64 px, 300 steps each
    python -m benchmarks.compare_algorithms --algos style_sac sac -n 1500 --seeds 0 1 2
    python -m benchmarks.compare_algorithms --no-train           # only read the run folders
    python -m benchmarks.compare_algorithms --workers 3 --threads 1   # 3 (algorithm, seed) runs at a time

Each (algorithm, seed) is trained with ``python -m agents.train --algo ALGO`` (hyper-parameters from
``agents/training/hyperparams/ALGO.yml``) into ``--log-folder``, unless a finished run with the same algorithm, seed,
budget and image size is there already (then it is read). ``--workers N`` trains and evaluates N runs at a time,
each in its own process (with ``--threads`` torch threads each; each run checks the free memory when it starts),
and merges their results into the same outputs as one after the other. ``--name`` sets the output files' stem
(``compare_algorithms``), so comparisons at several budgets can sit side by side. An algorithm whose replay
or rollout buffer would not fit the free memory, or that runs out of memory, is reported as such in the table.

Then: learning curves (episode return from the runs' Monitor files, mean +- std over seeds) and a
deterministic evaluation of every final model on the fixed evaluation pairs of :mod:`agents.inference`
(one 10-step episode per pair): the env's style and content losses after the last step, mean +- std over
seeds (each seed's value is the mean over pairs). Two references that are not trained here: the content photo
left as is (``no-op``) and the authors' released RLMiniStyler. Writes ``compare_algorithms.{md,csv,json}`` and
``compare_algorithms.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import psutil
import yaml

from agents.cli import cli_main, int_range, train
from agents.inference.pictures import EVAL_PAIRS
from agents.training.config import ALGOS, HYPERPARAMS_DIR, algorithm_class
from benchmarks.common import (
    Controller,
    Report,
    Row,
    benchmark_parser,
    configure_torch,
    machine_info,
    policy_controller,
    pyplot,
    save_figure,
    settings_of,
    unchanged_photo,
)
from nst_env.images import resolve_sample

#: Fraction of the free memory a run's buffers may be expected to take before the run is skipped.
MEMORY_FRACTION = 0.8


def find_run(log_folder: Path, algo: str, seed: int, n_timesteps: int, image_size: int) -> Path | None:
    """The newest finished run folder (with ``model.zip``) of this algorithm, seed, budget and image size."""
    matches = []
    for config_file in sorted(log_folder.glob("*/config.yml")):
        config = yaml.safe_load(config_file.read_text())
        same = (
            config.get("algo", "style_sac"),
            config.get("seed"),
            config.get("n_timesteps"),
            config.get("env_kwargs", {}).get("image_size"),
        ) == (algo, seed, n_timesteps, image_size)
        if same and (config_file.parent / "model.zip").is_file():
            matches.append(config_file.parent)
    return max(matches, key=lambda p: p.stat().st_mtime) if matches else None


def buffer_bytes(algo: str, image_size: int, hyperparams: dict[str, Any]) -> int:
    """Memory of an algorithm's transition storage at ``image_size``: replay buffers keep two uint8
    observations (2 images each) and a float32 image action per transition; rollout buffers keep float32
    observations and actions. StyleSAC stores its latent (float16 by default) instead of the image.

    :param algo: the ``--algo`` name.
    :param image_size: image side in px.
    :param hyperparams: the algorithm's YAML entry (buffer_size or n_steps).
    """
    image = 3 * image_size * image_size
    if algo == "style_sac":
        latent = 64 * -((-image_size // 4) ** 2) * 2
        return hyperparams["buffer_size"] * (4 * image + latent)
    if "buffer_size" in hyperparams:
        return hyperparams["buffer_size"] * (4 * image + 4 * image)
    return hyperparams.get("n_steps", 2048) * (2 * 4 * image + 4 * image)


def train_run(algo: str, seed: int, args: argparse.Namespace) -> tuple[Path | None, str]:
    """Train one run (or reuse a finished one).

    :param algo: the ``--algo`` name.
    :param seed: the run's seed.
    :param args: this script's arguments (budget, image size, log folder, device, overrides, ``--no-train``).
    :return: the run folder (``None`` if it could not run) and a status.
    """
    existing = find_run(args.log_folder, algo, seed, args.n_timesteps, args.image_size)
    if existing is not None:
        return existing, "finished run read"
    if args.no_train:
        return None, "no finished run found (--no-train)"
    hyperparams = yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())["NST-v0"]
    need, free = buffer_bytes(algo, args.image_size, hyperparams), psutil.virtual_memory().available
    if need > MEMORY_FRACTION * free:
        return None, f"skipped: buffers need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    argv = [
        "--algo",
        algo,
        "-n",
        str(args.n_timesteps),
        "--image-size",
        str(args.image_size),
        "--seed",
        str(seed),
        "-f",
        str(args.log_folder),
        "--save-freq",
        "0",
        "--eval-freq",
        "0",
        "--no-progress",
        "-v",
        "0",
        "--device",
        args.device,
    ]
    if args.hyperparams.get(algo):
        argv += ["--hyperparams", *args.hyperparams[algo]]
    try:
        code = train.main(argv)
    except (MemoryError, RuntimeError) as exc:
        if "memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
            raise
        return None, f"out of memory: {str(exc).splitlines()[0][:120]}"
    if code != 0:  # Ctrl-C or SIGTERM: the run saved a checkpoint; stop the comparison too
        raise KeyboardInterrupt(f"{algo} seed {seed} was interrupted (exit status {code}).")
    return find_run(args.log_folder, algo, seed, args.n_timesteps, args.image_size), "trained"


def monitor(run_dir: Path) -> pd.DataFrame:
    """A run's episodes (``r`` return, ``l`` length, ``t`` seconds since the start) from its Monitor files."""
    frames = [pd.read_csv(f, skiprows=1) for f in sorted((run_dir / "monitor").glob("*.monitor.csv"))]
    return pd.concat(frames) if frames else pd.DataFrame({"r": [], "l": [], "t": []})


def model_controller(run_dir: Path, algo: str) -> Controller:
    """A run's final model acting deterministically on CPU."""
    model = algorithm_class(algo).load(run_dir / "model.zip", device="cpu")
    return lambda obs: model.predict(obs, deterministic=True)[0]


def evaluate(controller: Controller, image_size: int) -> dict[str, float]:
    """One deterministic episode per evaluation pair: the env's losses after the last step and the return.

    :param controller: maps the observation to the next image.
    :param image_size: env image side in px.
    :return: ``style_loss``, ``content_loss`` (after the last step) and ``return``, each the mean over pairs.
    """
    env = gym.make("NST-v0", image_size=image_size, device="cpu")
    results = []
    for content, style in EVAL_PAIRS:
        obs, _ = env.reset(seed=0, options={"content": resolve_sample(content), "style": resolve_sample(style)})
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(controller(obs))
            total += float(reward)
            done = terminated or truncated
        results.append((info["style_loss"], info["content_loss"], total))
    env.close()
    style, content, ret = np.mean(results, axis=0)
    return {"style_loss": float(style), "content_loss": float(content), "return": float(ret)}


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation, ``None`` for no values."""
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)


def plot_curves(curves: dict[str, list[np.ndarray]], episode_length: int, path: Path, smooth: int) -> None:
    """Episode return against env steps per algorithm: mean +- std over seeds (episodes aligned by index).

    :param curves: per algorithm, one return array per seed.
    :param episode_length: env steps per episode (x axis).
    :param path: the PNG to write.
    :param smooth: moving-average window in episodes (1: none).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for algo, runs in curves.items():
        length = min(len(r) for r in runs)
        if length == 0:
            continue
        kernel = np.ones(min(smooth, length)) / min(smooth, length)
        data = np.stack([np.convolve(r[:length], kernel, mode="valid") for r in runs])
        steps = episode_length * np.arange(len(kernel), length + 1)  # episode index at the window end
        mean, std = data.mean(axis=0), data.std(axis=0)
        ax.plot(steps, mean, label=f"{algo} ({len(runs)} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"episode return (-sum of style losses){f', moving average of {smooth}' if smooth > 1 else ''}")
    ax.set_title("NST-v0 learning curves, mean +- std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, device="cpu", device_help="cpu, cuda, ...")
    p.add_argument(
        "--algos", nargs="+", choices=sorted(ALGOS), default=["style_sac", "sac", "td3", "tqc", "ppo", "a2c"]
    )
    p.add_argument("--seeds", type=int_range(0, 2**32 - 1), nargs="+", default=[0, 1, 2])
    p.add_argument("-n", "--n-timesteps", type=int_range(1), default=300, help="env steps per run (the same for all)")
    p.add_argument("--image-size", type=int_range(36, 4096), default=64, help="image side (NatureCNN needs >= 36 px)")
    p.add_argument("-f", "--log-folder", type=Path, default=Path("runs/compare"), help="run folders")
    p.add_argument(
        "--hyperparams",
        type=yaml.safe_load,
        default={},
        help='per-algorithm overrides as YAML, e.g. "{sac: [learning_starts:10]}"',
    )
    p.add_argument("--no-train", action="store_true", help="only read finished runs from --log-folder")
    p.add_argument("--smooth", type=int_range(1), default=5, help="moving average of the curves, in episodes")
    p.add_argument("--name", default="compare_algorithms", help="stem of the output files")
    p.add_argument("--workers", type=int_range(1, 256), default=1, help="runs trained and evaluated at a time")
    return p.parse_args(argv)


def run_job(algo: str, seed: int, args: argparse.Namespace) -> tuple[Row, np.ndarray | None]:
    """Train (or read) one run and evaluate its final model: one job of :func:`main`, in a worker process with
    ``--workers``.

    :param algo: the ``--algo`` name.
    :param seed: the run's seed.
    :param args: this script's arguments.
    :return: the run's row (status, folder, training minutes, last training returns, final losses) and its
        episode returns (``None`` when it did not run).
    """
    run_dir, status = train_run(algo, seed, args)
    run: Row = {"algo": algo, "seed": seed, "status": status, "run": str(run_dir) if run_dir else None}
    returns = None
    if run_dir is not None:
        episodes = monitor(run_dir)
        returns = episodes["r"].to_numpy()
        score = evaluate(model_controller(run_dir, algo), args.image_size)
        run.update(
            train_minutes=float(episodes["t"].max()) / 60,
            last_10_train_return=float(episodes["r"].tail(10).mean()),
            **{f"final_{k}": v for k, v in score.items()},
        )
    print(f"{algo} seed {seed}: {status}" + (f", {score}" if run_dir else ""), flush=True)
    return run, returns


def run_jobs(args: argparse.Namespace) -> list[tuple[Row, np.ndarray | None]]:
    """:func:`run_job` for every (algorithm, seed), ``--workers`` at a time; the results in that order.

    :param args: this script's arguments.
    """
    jobs = [(algo, seed) for algo in args.algos for seed in args.seeds]
    if args.workers == 1:
        return [run_job(algo, seed, args) for algo, seed in jobs]
    with ProcessPoolExecutor(
        args.workers,
        mp_context=multiprocessing.get_context("spawn"),  # torch's threads do not survive a fork
        initializer=configure_torch,
        initargs=(args.threads,),
    ) as pool:
        return list(pool.map(run_job, *zip(*jobs), repeat(args)))


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Train (or read) every run, evaluate, tabulate and plot; return the table rows."""
    args = parse_args(argv)
    configure_torch(args.threads)
    machine = machine_info(args.device)
    results = run_jobs(args)
    runs = [run for run, _ in results]
    curves: dict[str, list[np.ndarray]] = {}
    for run, returns in results:
        if returns is not None:
            curves.setdefault(run["algo"], []).append(returns)
    rows: list[Row] = []
    for algo in args.algos:
        mine = [run for run in runs if run["algo"] == algo]
        done = [run for run in mine if run["run"] is not None]
        row: Row = {"method": algo, "seeds": len(done), "status": "; ".join(sorted({run["status"] for run in mine}))}
        for key in ("style_loss", "content_loss", "return"):
            row[f"final_{key}"], row[f"final_{key}_std"] = mean_std([run[f"final_{key}"] for run in done])
        row["last_10_train_return"], row["last_10_train_return_std"] = mean_std(
            [run["last_10_train_return"] for run in done]
        )
        row["train_minutes"] = mean_std([run["train_minutes"] for run in done])[0]
        rows.append(row)
    rows.sort(key=lambda r: (r["final_style_loss"] is None, r["final_style_loss"] or 0.0))
    references = {
        "no-op (content photo)": unchanged_photo,
        "rlministyler (released)": policy_controller("rlministyler"),
    }
    for name, controller in references.items():
        score = evaluate(controller, args.image_size)
        rows.append(
            {
                "method": name,
                "seeds": 0,
                "status": "reference, not trained here",
                **{f"final_{k}": v for k, v in score.items()},
            }
        )

    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, 10, args.out / f"{args.name}.png", args.smooth)
    Report(
        name=args.name,
        title=f"RL algorithms on NST-v0: {args.n_timesteps} env steps per run at {args.image_size} px, "
        f"seeds {args.seeds}",
        columns=[
            "method",
            "seeds",
            "final_style_loss",
            "final_style_loss_std",
            "final_content_loss",
            "final_content_loss_std",
            "final_return",
            "last_10_train_return",
            "train_minutes",
            "status",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                "Sorted by final style loss (lower: closer to the style). `final_*`: deterministic evaluation of the "
                f"final model, one 10-step episode on each of {len(EVAL_PAIRS)} fixed pairs "
                f"({', '.join(f'{c} x {s}' for c, s in EVAL_PAIRS)}), the env's style loss (mean/std at relu1_1.."
                "relu4_1) and content loss (relu4_1 vs the photo) after the last step and the episode return; mean "
                "over pairs, then mean and std over seeds. `last_10_train_return`: mean return of the last 10 "
                "training episodes (stochastic policy). `train_minutes`: wall clock per run on this machine (Monitor "
                "time of the last episode), for a sense of cost only: the machine was shared."
            ),
            (
                "Every algorithm has the same env-step budget; StyleSAC and the off-policy algorithms make one "
                "update per step after 100 steps, PPO and A2C update per rollout (`agents/training/hyperparams/*.yml`). The "
                "references are not trained here: `no-op` leaves the photo unchanged (its style loss is the "
                "starting point), `rlministyler (released)` is the authors' model trained at 256 px for ~10^5 updates."
            ),
        ],
        extra_tables=[
            ("Runs", runs, ["algo", "seed", "status", "final_style_loss", "final_content_loss", "train_minutes", "run"])
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
