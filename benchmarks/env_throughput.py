"""NST-v0 throughput: env steps per second against the floor of the work a step must do.

The floor is one VGG-19 forward pass to relu4_1 plus the mean/std style statistics of the same single image
(``torch.no_grad``): no step can be cheaper. The goal is an env at least 0.8 as fast as that floor.

Env steps and floor calls are timed one by one, interleaved in rounds (so a busy machine slows both alike),
after a warm-up; rates are 1 / median time. Resets between episodes are not timed (one VGG pass for two
images, once per ``max_episode_steps``); actions are drawn before timing.

    python -m benchmarks.env_throughput                        # 64, 128, 256 px on the CPU (+ CUDA if any)
    python -m benchmarks.env_throughput --device cuda --sizes 256 512 --steps 200

Writes ``env_throughput.{md,csv,json,png}`` under ``benchmarks/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents.cli import cli_main, int_range
from benchmarks.common import benchmark_parser, save_figure
from benchmarks.common import machine_info as common_machine_info

GOAL = 0.8
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
    parser.add_argument(
        "--sizes", nargs="+", type=int_range(16, 8192), default=[64, 128, 256], help="image sides in pixels"
    )
    parser.add_argument("--steps", type=int_range(1), default=60, help="timed env steps (and floor calls) per size")
    parser.add_argument("--warmup", type=int_range(0), default=5, help="untimed env steps and floor calls first")
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


def measure(device_name: str, size: int, steps: int, warmup: int, rounds: int) -> dict[str, object]:
    """Median seconds per env step and per floor call at one size on one device (current torch threads)."""
    import gymnasium as gym

    import nst_env  # noqa: F401  (registers NST-v0)
    from nst_env.losses import STYLE_LAYERS, style_statistics
    from nst_env.vgg import VGG19Features

    env = gym.make("NST-v0", image_size=size, device=device_name)
    device = env.unwrapped.device
    layers = STYLE_LAYERS["meanstd"]  # relu1_1 ... relu4_1
    floor_net = VGG19Features(layers, device=device)
    rng = np.random.default_rng(0)
    actions = rng.random((8, 3, size, size), dtype=np.float32)
    floor_input = torch.from_numpy(actions[0][None]).to(device)

    def floor_call() -> None:
        with torch.no_grad():
            feats = floor_net(floor_input)
            stats = style_statistics(feats, "meanstd", layers)
        float(stats[layers[-1]][1].sum())  # the env reads its loss back to the CPU every step too
        _sync(device)

    env_times: list[float] = []
    floor_times: list[float] = []
    reset_times: list[float] = []
    state = {"done": True, "i": 0}

    def env_step() -> float:
        if state["done"]:
            start = time.perf_counter()
            env.reset(seed=state["i"])
            reset_times.append(time.perf_counter() - start)
        action = actions[state["i"] % len(actions)]
        state["i"] += 1
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        _sync(device)
        elapsed = time.perf_counter() - start
        state["done"] = terminated or truncated
        return elapsed

    for _ in range(warmup):
        env_step()
        floor_call()
    reset_times.clear()
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for _ in range(per_round):
            env_times.append(env_step())
        for _ in range(per_round):
            start = time.perf_counter()
            floor_call()
            floor_times.append(time.perf_counter() - start)
    env.close()
    env_s, floor_s = statistics.median(env_times), statistics.median(floor_times)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "size": size,
        "steps_per_s": 1.0 / env_s,
        "floor_per_s": 1.0 / floor_s,
        "ratio": floor_s / env_s,
        "env_ms_median": 1e3 * env_s,
        "env_ms_p90": 1e3 * float(np.percentile(env_times, 90)),
        "floor_ms_median": 1e3 * floor_s,
        "floor_ms_p90": 1e3 * float(np.percentile(floor_times, 90)),
        "reset_ms_median": 1e3 * statistics.median(reset_times) if reset_times else None,
        "timed_steps": len(env_times),
        "timed_floor_calls": len(floor_times),
    }


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
        f"Env steps/s vs the floor (one VGG-19 pass to relu4_1 + mean/std style statistics of one image, "
        f"no_grad); goal: ratio >= {GOAL}. Medians of individually timed calls, interleaved in rounds.",
        "",
        "| device | threads | size | steps/s | floor/s | ratio | env ms | floor ms | reset ms | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        reset = f"{r['reset_ms_median']:.1f}" if r["reset_ms_median"] is not None else "-"
        lines.append(
            f"| {r['device']} | {r['threads']} | {r['size']} | {r['steps_per_s']:.1f} | {r['floor_per_s']:.1f} | {r['ratio']:.3f} "
            f"| {r['env_ms_median']:.2f} | {r['floor_ms_median']:.2f} | {reset} | "
            f"{'ok' if r['ratio'] >= GOAL else 'BELOW'} |"
        )
    lines += [
        "",
        f"Machine: {info['cpu']} ({info['cpu_count']} CPUs), torch {info['torch']} "
        f"({info['torch_threads']} threads), {info['platform']}, Python {info['python']}"
        + (f", GPU {info['gpu']}" if "gpu" in info else "")
        + (f"; load average at start {info['load_average_1_5_15min']}" if "load_average_1_5_15min" in info else ""),
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['device']} x{r['threads']}\n{r['size']} px" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows)), 4.0))
    env_bars = ax.bar(x - 0.2, [r["steps_per_s"] for r in rows], 0.4, label="env steps/s")
    ax.bar(x + 0.2, [r["floor_per_s"] for r in rows], 0.4, label="floor calls/s (VGG to relu4_1 + stats)")
    for bar, r in zip(env_bars, rows):
        ax.annotate(
            f"{r['ratio']:.2f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel("per second (log scale)")
    ax.set_title(f"NST-v0 throughput; bar labels: env/floor ratio (goal >= {GOAL})", fontsize=10)
    ax.legend(fontsize=8)
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
                row = measure(device_name, size, args.steps, args.warmup, args.rounds)
                rows.append(row)
                print(
                    f"{row['device']:>6} x{threads} {size:>4} px: {row['steps_per_s']:8.1f} steps/s, "
                    f"floor {row['floor_per_s']:8.1f}/s, ratio {row['ratio']:.3f}",
                    flush=True,
                )
    torch.set_num_threads(default_threads)
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
