"""StyleSAC's distributed training throughput against the number of ranks (``agents.train_sac --distributed``).

    python -m benchmarks.scaling                                    # 1 and 2 ranks at 64 px
    python -m benchmarks.scaling --ranks 1 2 4 8 --device cuda --image-size 256 --steps 200

For each N of ``--ranks``, ``torchrun --standalone --nproc_per_node N`` runs this module's worker on every rank
(importing this checkout): StyleSAC (``agents/training/hyperparams/style_sac.yml``, one update per env step) on its own env
and replay buffer, seeded as a distributed training run seeds its ranks, with rank 0's weights and the gradients
averaged across the ranks at every update (:func:`agents.training.distributed.replicate`). Each rank collects
``batch_size`` steps, makes ``--warmup`` updates, then trains ``--steps`` env steps (one update each) under the
clock. Per N: updates/s (every rank makes each update, on the average gradient of N batches), env steps/s of all
ranks together, the speed-up over the 1-rank row, and the gradient all-reduces: their time per update (the
device synchronised around each), their count and bytes per update, and their share of the wall time. Each rank
gets ``--threads`` torch CPU threads (default: the CPU count divided by N). The load average is recorded
before and after every row. Writes ``scaling.{md,csv,json}`` and ``scaling.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from agents.cli import cli_main, float_range, int_range
from agents.style_sac import StyleSAC
from agents.training.config import algorithm_kwargs
from agents.training.distributed import GradientAverager, process_group, replicate
from agents.training.experiment import make_env
from benchmarks.common import (
    Report,
    Row,
    benchmark_parser,
    configure_torch,
    machine_info,
    pyplot,
    save_figure,
    settings_of,
    style_sac_config,
    synchronize,
)
from nst_env.utils import resolve_device

#: The repository root, put first on the workers' ``PYTHONPATH`` so that they run this checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent


def load_1min() -> float | None:
    """The 1-minute load average (``None`` where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def worker(args: argparse.Namespace) -> None:
    """One rank's measurement; rank 0 writes every rank's numbers to ``args.worker`` (JSON).

    :param args: the parsed command line (sizes, steps, device, threads, seed, timeout, the result file).
    """
    configure_torch(args.threads)
    with process_group(args.device, args.dist_timeout) as group:
        config = style_sac_config(args.image_size, group.seed(args.seed, 1))
        batch_size = config["batch_size"]
        config.update(learning_starts=batch_size, buffer_size=batch_size + args.warmup + args.steps + 1)
        env = make_env(config, None, str(group.device), resume=False)
        model = StyleSAC(config["policy"], env, seed=config["seed"], device=group.device, **algorithm_kwargs(config))
        replicate(group, model)
        model.learn(batch_size + args.warmup)
        model.gradient_hook = averager = GradientAverager(group, timed=True)  # counts from here
        group.any(False)  # the ranks start the clock together
        start = time.perf_counter()
        model.learn(args.steps, reset_num_timesteps=False)
        synchronize(group.device)
        wall = time.perf_counter() - start
        env.close()
        mine = {"wall_s": wall, "allreduce_s": averager.seconds, "calls": averager.calls, "bytes": averager.bytes}
        every: list[Any] = [None] * group.world_size
        group.collective(dist.all_gather_object, every, mine)
    if group.is_main:
        Path(args.worker).write_text(json.dumps({"batch_size": batch_size, "ranks": every}))


def measure(ranks: int, threads: int, args: argparse.Namespace, folder: Path) -> Row:
    """Run the worker on ``ranks`` processes with torchrun and summarise their numbers.

    :param ranks: the number of processes.
    :param threads: torch CPU threads per process.
    :param args: the parsed command line.
    :param folder: where the workers' result file goes.
    :raises SystemExit: torchrun failed.
    """
    result = folder / f"ranks_{ranks}.json"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)),
        *("-m", "benchmarks.scaling", "--worker", str(result), "--threads", str(threads)),
        *("--image-size", str(args.image_size), "--steps", str(args.steps), "--warmup", str(args.warmup)),
        *("--device", args.device, "--seed", str(args.seed), "--dist-timeout", str(args.dist_timeout)),
    ]
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads)}
    load_before = load_1min()
    code = subprocess.run(command, env=env, cwd=REPO_ROOT).returncode
    if code != 0 or not result.is_file():
        raise SystemExit(f"--ranks {ranks}: torchrun ended with exit status {code} (its output is above).")
    measured = json.loads(result.read_text())
    per_rank = measured["ranks"]
    wall = max(r["wall_s"] for r in per_rank)
    allreduce = sum(r["allreduce_s"] for r in per_rank) / ranks
    return {
        "ranks": ranks,
        "threads_per_rank": threads,
        "image_size": args.image_size,
        "batch_per_rank": measured["batch_size"],
        "steps_per_rank": args.steps,
        "wall_s": wall,
        "updates_per_s": args.steps / wall,
        "env_steps_per_s": ranks * args.steps / wall,
        "allreduce_ms_per_update": 1e3 * allreduce / args.steps,
        "allreduces_per_update": per_rank[0]["calls"] / args.steps,
        "allreduce_mib_per_update": per_rank[0]["bytes"] / args.steps / 2**20,
        "allreduce_share": allreduce / wall,
        "load_1min_before": load_before,
        "load_1min_after": load_1min(),
    }


def plot(rows: list[Row], path: Path) -> None:
    """Env steps/s and updates/s against the ranks (with the ideal line), and the all-reduce time per update.

    :param rows: the measured rows.
    :param path: the PNG to write.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ranks = [r["ranks"] for r in rows]
    left.plot(ranks, [r["env_steps_per_s"] for r in rows], "o-", label="env steps/s (all ranks)")
    left.plot(ranks, [r["updates_per_s"] for r in rows], "s-", label="updates/s")
    base = next((r for r in rows if r["ranks"] == 1), None)
    if base is not None:
        left.plot(ranks, [base["env_steps_per_s"] * n for n in ranks], "k:", label="ideal env steps/s")
    left.set_xlabel("ranks")
    left.set_ylabel("per second")
    left.legend(fontsize=8)
    right.plot(ranks, [r["allreduce_ms_per_update"] for r in rows], "o-")
    right.set_xlabel("ranks")
    right.set_ylabel("gradient all-reduce, ms per update")
    for ax in (left, right):
        ax.set_xticks(ranks)
        ax.grid(alpha=0.3)
    fig.suptitle(f"StyleSAC data-parallel scaling at {rows[0]['image_size']} px", fontsize=10)
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(
        __doc__,
        threads_help="torch CPU threads per rank (default: the CPU count divided by the ranks)",
        seed_help="the run's seed (rank r's: seed + r)",
    )
    p.add_argument("--ranks", type=int_range(1, 1024), nargs="+", default=[1, 2], help="numbers of processes")
    p.add_argument("--image-size", type=int_range(16, 4096), default=64, help="image side in px")
    p.add_argument("--steps", type=int_range(1), default=50, help="timed env steps per rank (one update each)")
    p.add_argument("--warmup", type=int_range(1), default=5, help="updates before the clock starts")
    p.add_argument("--dist-timeout", type=float_range(0.0), default=300.0, help="seconds a rank waits for the others")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a rank's run, started by torchrun
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every ``--ranks`` value, write the tables and the figure; return the rows (a worker: none)."""
    args = parse_args(argv)
    if args.worker is not None:
        worker(args)
        return []
    machine = machine_info(resolve_device(args.device))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        for ranks in args.ranks:
            threads = args.threads or max(1, (os.cpu_count() or 1) // ranks)
            rows.append(measure(ranks, threads, args, Path(folder)))
    base = next((r for r in rows if r["ranks"] == 1), None)
    for row in rows:
        row["speedup"] = row["env_steps_per_s"] / base["env_steps_per_s"] if base else None
        row["efficiency"] = row["speedup"] / row["ranks"] if base else None
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "scaling.png")
    Report(
        name="scaling",
        title=f"StyleSAC data-parallel scaling: ranks {args.ranks} at {args.image_size} px on {args.device}",
        columns=[
            "ranks",
            "threads_per_rank",
            "updates_per_s",
            "env_steps_per_s",
            "speedup",
            "efficiency",
            "allreduce_ms_per_update",
            "allreduces_per_update",
            "allreduce_mib_per_update",
            "allreduce_share",
            "load_1min_before",
            "load_1min_after",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            "Each rank runs its own env and replay buffer and makes one update per env step; at every update the "
            "gradients of each optimizer (critic, generative, actor every 4th update, temperature) are averaged "
            "across the ranks in one all-reduce, as `agents.train_sac --distributed` does. `updates_per_s`: "
            "synchronous updates per second, each on the average gradient of `ranks` batches of "
            f"{rows[0]['batch_per_rank']}; `env_steps_per_s`: all ranks together; `speedup` and `efficiency`: "
            "env steps/s against the 1-rank row (per rank). `allreduce_ms_per_update`: wall time inside the "
            "gradient all-reduces per update, mean over ranks (it includes waiting for the slowest rank); "
            "`allreduce_mib_per_update`: the gradients sent per update. `load_1min_*`: the 1-minute load "
            "average before and after the row; numbers from a loaded machine are not comparable.",
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
