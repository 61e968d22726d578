"""NST-v0 throughput: env steps per second (all envs together) of the batched env against N separate envs, and
against the floor of the work a step must do.

Vec envs (``--vec-envs``): ``batched`` (:class:`~nst_env.vector.NSTVectorEnv`), ``batched-bf16`` (the same with its
bfloat16 reward pass), ``sync`` (Gymnasium's ``SyncVectorEnv`` of N ``NSTEnv``s) and ``subproc`` (SB3's
``SubprocVecEnv``: forked workers, one torch thread each; CPU only). The floor is the VGG-19 work a step must do,
through the env's own reward pass (:meth:`~nst_env.reward.PerceptualReward.features`, which on the CPU runs
in chunks): one pass to relu4_1 over the N images plus their mean/std style statistics (``torch.no_grad``, read
back to the host), and, at every ``--episode-steps``-th call, as at the step where the N episodes end and the next start, one
more pass over their 2N new content and style images: no float32 step of N envs can be cheaper. A timed block
holds whole episodes (``--steps / --rounds`` is a multiple of ``--episode-steps``).

Each vec env and its floor are timed in blocks of steps, interleaved in rounds (so a busy machine slows both alike),
after a warm-up; a rate is the median block's. Episode ends reset inside the steps (same-step autoreset) and are
timed with them; actions are drawn before timing. The load average at the start and at the end is written with the
results: a run beside other work is a smoke run, not a measurement.

    python -m benchmarks.env_throughput                       # N = 1, 4, 16 at 64 and 128 px on the CPU (+ CUDA)
    python -m benchmarks.env_throughput --threads 1 2 --sizes 64 128 256
    python -m benchmarks.env_throughput --device cuda --n-envs 1 16 256 --sizes 64 256 --vec-envs batched batched-bf16 sync

Writes ``env_throughput.{md,csv,json,png}`` under ``benchmarks/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from agents.cli import cli_main, int_range
from benchmarks.common import benchmark_parser, save_figure
from benchmarks.common import machine_info as common_machine_info

#: The batched float32 env's goal: within 1.1 times the floor's time per step.
GOAL = 1 / 1.1
#: ``--vec-envs`` choices.
VEC_ENVS = ("batched", "batched-bf16", "sync", "subproc")
RESULTS = Path(__file__).resolve().parent / "results"
NAME = "env_throughput"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(
        __doc__, device=None, threads_help=None, out=RESULTS, out_help="folder for the .md/.csv/.json/.png results"
    )
    parser.add_argument(
        "--device",
        nargs="+",
        default=["auto"],
        help="devices to run on: cpu, cuda, cuda:1 ...; 'auto' = cpu, plus cuda when available",
    )
    parser.add_argument("--sizes", nargs="+", type=int_range(16, 8192), default=[64, 128], help="image sides in pixels")
    parser.add_argument("--n-envs", nargs="+", type=int_range(1, 4096), default=[1, 4, 16], help="envs per vec env")
    parser.add_argument("--vec-envs", nargs="+", choices=VEC_ENVS, default=list(VEC_ENVS), help="vec envs to time")
    parser.add_argument(
        "--steps", type=int_range(1), default=60, help="timed vec env steps (and floor calls) per configuration"
    )
    parser.add_argument("--warmup", type=int_range(0), default=5, help="untimed env steps and floor calls first")
    parser.add_argument(
        "--episode-steps", type=int_range(1), default=10, help="the envs' max_episode_steps (NST-v0's default: 10)"
    )
    parser.add_argument(
        "--rounds", type=int_range(1), default=6, help="interleaved env/floor rounds the steps are split in"
    )
    parser.add_argument(
        "--threads",
        type=int_range(1, 1024),
        nargs="+",
        default=None,
        help="torch CPU thread counts to compare, e.g. 1 2 (default: torch's choice)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG bar plot")
    return parser.parse_args(argv)


def devices(requested: list[str]) -> list[str]:
    out: list[str] = []
    for name in requested:
        if name == "auto":
            out += ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        elif name.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipping {name}: CUDA is not available", file=sys.stderr)
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_vec(
    kind: str, n_envs: int, size: int, device: str, episode_steps: int
) -> tuple[Callable[[np.ndarray], object], Callable[[], None]]:
    """One vec env of ``kind`` (a :data:`VEC_ENVS` name), reset with seed 0: its step and close functions.

    :param kind: the vec env.
    :param n_envs: its envs.
    :param size: the image side.
    :param device: where VGG-19 runs.
    :param episode_steps: the envs' ``max_episode_steps``.
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    from nst_env import NSTVectorEnv

    kwargs = {"image_size": size, "device": device, "max_episode_steps": episode_steps}
    if kind.startswith("batched"):
        env = NSTVectorEnv(n_envs, precision="bfloat16" if kind == "batched-bf16" else "float32", **kwargs)
        env.reset(seed=0)
        return env.step, env.close
    if kind == "sync":
        vector_kwargs = {"autoreset_mode": AutoresetMode.SAME_STEP}
        sync = gym.make_vec("NST-v0", n_envs, vectorization_mode="sync", vector_kwargs=vector_kwargs, **kwargs)
        sync.reset(seed=0)
        return sync.step, sync.close
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    workers = make_vec_env(
        "nst_env:NST-v0",
        n_envs=n_envs,
        seed=0,
        env_kwargs=kwargs,
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": start_method},
    )
    workers.reset()
    return workers.step, workers.close


def measure(
    device_name: str, size: int, n_envs: int, kind: str, steps: int, warmup: int, rounds: int, episode_steps: int
) -> dict[str, object]:
    """Seconds per vec env step and per floor call (median of the timed blocks) of one configuration.

    :param device_name: where VGG-19 runs.
    :param size: the image side.
    :param n_envs: envs per vec env.
    :param kind: the vec env (:data:`VEC_ENVS`).
    :param steps: timed steps (and floor calls).
    :param warmup: untimed steps and floor calls first.
    :param rounds: the interleaved rounds the steps are split in.
    :param episode_steps: the envs' episode length (a block of ``steps / rounds`` holds whole episodes).
    :raises ValueError: ``steps / rounds`` is not a multiple of ``episode_steps``.
    """
    from nst_env.losses import STYLE_LAYERS, style_statistics
    from nst_env.reward import PerceptualReward
    from nst_env.style_transfer import quantise
    from nst_env.utils import resolve_device

    device = resolve_device(device_name)
    per_round = max(1, steps // rounds)
    if per_round % episode_steps:
        raise ValueError(
            f"--steps / --rounds must be a multiple of --episode-steps ({episode_steps}) so that each timed block "
            f"holds whole episodes and times their resets as often as training does, got {per_round}."
        )
    step, close = make_vec(kind, n_envs, size, str(device), episode_steps)
    layers = STYLE_LAYERS["meanstd"]  # relu1_1 ... relu4_1
    reward = PerceptualReward("meanstd", device)
    actions = np.random.default_rng(0).random((4, n_envs, 3, size, size), dtype=np.float32)
    floor_input = torch.from_numpy(quantise(actions[0])).to(device)
    starts_input = torch.from_numpy(quantise(np.concatenate(actions[1:3]))).to(device)  # 2N episode-start images

    def floor_call(i: int) -> None:
        with torch.no_grad():
            stats = style_statistics(reward.features(floor_input), "meanstd", layers)
            if i % episode_steps == episode_steps - 1:  # the episodes end: the next ones' photos and styles
                style_statistics(reward.features(starts_input), "meanstd", layers)
        stats[layers[-1]][1].sum().item()  # the env reads its losses back to the host every step too

    def block(call: Callable[[int], object], count: int) -> float:
        start = time.perf_counter()
        for i in range(count):
            call(i)
        _sync(device)
        return (time.perf_counter() - start) / count

    env_call = lambda i: step(actions[i % len(actions)])
    floor = floor_call
    if warmup:
        block(env_call, warmup)
        block(floor, warmup)
    env_blocks, floor_blocks = [], []
    for _ in range(rounds):
        env_blocks.append(block(env_call, per_round))
        floor_blocks.append(block(floor, per_round))
    close()
    env_s, floor_s = statistics.median(env_blocks), statistics.median(floor_blocks)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": size,
        "n_envs": n_envs,
        "vec_env": kind,
        "steps_per_s": n_envs / env_s,
        "floor_per_s": n_envs / floor_s,
        "ratio": floor_s / env_s,
        "vs_sync": None,
        "step_ms": 1e3 * env_s,
        "floor_ms": 1e3 * floor_s,
        "timed_steps": per_round * rounds,
    }


def compare_with_sync(rows: list[dict[str, object]]) -> None:
    """Each row's ``vs_sync``: its env steps/s over the ``sync`` row's of the same device, threads, size and N."""
    key = lambda r: (r["device"], r["threads"], r["size"], r["n_envs"])
    sync = {key(r): r["steps_per_s"] for r in rows if r["vec_env"] == "sync"}
    for r in rows:
        if key(r) in sync:
            r["vs_sync"] = r["steps_per_s"] / sync[key(r)]  # type: ignore[operator]


def machine_info() -> dict[str, object]:
    """:func:`benchmarks.common.machine_info` plus the threading details that matter for this benchmark."""
    import gymnasium

    info: dict[str, object] = common_machine_info("cuda" if torch.cuda.is_available() else "cpu")
    info.update(
        torch_interop_threads=torch.get_num_interop_threads(),
        torch_parallel_info=torch.__config__.parallel_info().splitlines()[:4],
        mkldnn=torch.backends.mkldnn.is_available(),
        numpy=np.__version__,
        gymnasium=gymnasium.__version__,
    )
    return info


def markdown(rows: list[dict[str, object]], info: dict[str, object]) -> str:
    lines = [
        "# NST-v0 env throughput",
        "",
        "Env steps/s of all envs together; floor/s: env steps/s that one VGG-19 pass to relu4_1 plus the mean/std "
        "style statistics of the N images allows, with one more pass over the 2N new photos and styles at each "
        "episode end (no_grad; the env's own reward pass, in chunks on the CPU); ratio = floor time / step time (goal for `batched`: "
        f">= {GOAL:.2f}, within 1.1x of the floor); vs sync: steps/s over `sync`'s. Medians of timed blocks of "
        "whole episodes, interleaved in rounds. `subproc` runs one process per env, so it uses every core "
        "whatever `threads` says.",
        "",
        "| device | threads | size | N | vec env | steps/s | floor/s | ratio | vs sync | step ms | floor ms | goal |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        vs_sync = f"{r['vs_sync']:.2f}" if r["vs_sync"] is not None else "-"
        goal = ("ok" if r["ratio"] >= GOAL else "BELOW") if r["vec_env"] == "batched" else ""  # type: ignore[operator]
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['size']} | {r['n_envs']} | {r['vec_env']} "
            f"| {r['steps_per_s']:.1f} | {r['floor_per_s']:.1f} | {r['ratio']:.3f} | {vs_sync} "
            f"| {r['step_ms']:.2f} | {r['floor_ms']:.2f} | {goal} |"
        )
    lines += [
        "",
        f"Machine: {info['cpu']} ({info['cpu_count']} CPUs), torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['platform']}, Python {info['python']}"
        + (f", GPU {info['gpu']}" if "gpu" in info else "")
        + f"; load average (1, 5, 15 min) at the start {info.get('load_average_1_5_15min', '-')}, at the end "
        f"{info.get('load_average_at_end_1_5_15min', '-')}.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], path: Path) -> None:
    """Env steps/s against N, one panel per (device, threads, size), one line per vec env, the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["device"], r["threads"], r["size"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False, sharey=False)
    for ax, (device, threads, size) in zip(axes[0], panels):
        panel = [r for r in rows if (r["device"], r["threads"], r["size"]) == (device, threads, size)]
        for kind in dict.fromkeys(r["vec_env"] for r in panel):
            line = [r for r in panel if r["vec_env"] == kind]
            ax.plot([r["n_envs"] for r in line], [r["steps_per_s"] for r in line], "o-", label=kind)
        floor = [r for r in panel if r["vec_env"] == panel[0]["vec_env"]]
        ax.plot([r["n_envs"] for r in floor], [r["floor_per_s"] for r in floor], "k--", label="batched VGG floor")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{device} x{threads}, {size} px", fontsize=9)
        ax.set_xlabel("N (envs)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("env steps/s (all envs)", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("NST-v0 throughput", fontsize=10)
    save_figure(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    info = machine_info()
    default_threads = torch.get_num_threads()
    rows = []
    for device_name in devices(args.device):
        for threads in args.threads or [default_threads]:
            torch.set_num_threads(threads)
            for size in args.sizes:
                for n_envs in args.n_envs:
                    for kind in args.vec_envs:
                        if kind == "subproc" and not device_name.startswith("cpu"):
                            print(f"skipping subproc on {device_name}: forked workers cannot use CUDA", file=sys.stderr)
                            continue
                        row = measure(
                            device_name, size, n_envs, kind, args.steps, args.warmup, args.rounds, args.episode_steps
                        )
                        rows.append(row)
                        print(
                            f"{row['device']:>6} x{threads} {size:>4} px N={n_envs:<4} {kind:>12}: "
                            f"{row['steps_per_s']:8.1f} steps/s, floor {row['floor_per_s']:8.1f}/s, "
                            f"ratio {row['ratio']:.3f}",
                            flush=True,
                        )
    torch.set_num_threads(default_threads)
    compare_with_sync(rows)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]

    table = markdown(rows, info)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.md").write_text(table)
    with open(args.out / f"{NAME}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (args.out / f"{NAME}.json").write_text(
        json.dumps({"goal_ratio": GOAL, "settings": settings, "machine": info, "results": rows}, indent=2)
    )
    if not args.no_plot:
        plot(rows, args.out / f"{NAME}.png")
    print(f"\nwrote {', '.join(f'{NAME}.{e}' for e in ('md', 'csv', 'json', 'png'))} to {args.out}")
    return rows


if __name__ == "__main__":
    main()
