"""The stages that measure, each run in a child process (``--stage``), emitting one row at a time.

- ``machine``: device name, torch, CUDA, cuDNN and driver versions (``nvidia-smi`` when present).
- ``train``: StyleSAC env steps/s and updates/s per image size, AMP off and on, and ``--n-envs`` setting.
- ``env``: NST-v0's env steps/s of ``NSTVectorEnv`` (float32, bfloat16) and of a ``SyncVectorEnv`` of ``NSTEnv``s
  at N = 1, 16, 256 envs and 64 and 256 px, each against the batched VGG-19 floor (``benchmarks.env_throughput``).
- ``stylize``: ms per stylisation step of the released RLMiniStyler per size, PyTorch float32 and float16
  autocast and ONNX Runtime, with peak memory.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Row, machine_info
from benchmarks.gpu_suite.runner import Emit


# ---------------------------------------------------------------------------------------------- stage: machine
def nvidia_smi() -> dict[str, str]:
    """GPU name, driver version and memory from ``nvidia-smi`` (a note when it is missing or fails)."""
    if shutil.which("nvidia-smi") is None:
        return {"nvidia_smi": "not found"}
    query = "name,driver_version,memory.total,compute_cap"
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return {"nvidia_smi": f"failed: {exc}"}
    keys = ["gpu_name_smi", "driver_version", "gpu_memory_total", "compute_capability"]
    return {
        f"{key}_{i}" if i else key: value.strip()
        for i, line in enumerate(out)
        for key, value in zip(keys, line.split(","))
    }


def stage_machine(args: argparse.Namespace, deadline: float, emit: Emit) -> None:
    """Emit one ``{"key", "value"}`` row per fact about the machine and the device.

    :param args: the suite's arguments (``device``).
    :param deadline: unused (the stage takes seconds); the signature of every stage function.
    :param emit: receives each row.
    """
    device = torch.device(args.device)
    facts = machine_info(device if device.type != "cuda" or torch.cuda.is_available() else "cpu")
    facts.update(
        cuda_runtime=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        cuda_device_count=torch.cuda.device_count(),
        requested_device=args.device,
        **nvidia_smi(),
    )
    if device.type == "cuda" and torch.cuda.is_available():
        facts["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        facts["bf16_supported"] = torch.cuda.is_bf16_supported()
    for key, value in facts.items():
        emit({"key": key, "value": value if isinstance(value, (int, float, bool)) or value is None else str(value)})


# ---------------------------------------------------------------------------------------------- stage: train
def measure_training(size: int, amp: bool, n_envs: int, device: torch.device, seconds: float, log_dir: Path) -> Row:
    """StyleSAC env steps/s and updates/s at one setting, after a warm-up that makes the first updates.

    :param size: image side in px.
    :param amp: StyleSAC's ``use_amp``.
    :param n_envs: parallel envs (``SubprocVecEnv`` when > 1, as ``agents.train_sac`` makes them).
    :param device: where env VGG-19 and the learner run.
    :param seconds: wall-clock time for set-up, warm-up and measurement together (at least 2 s are measured).
    :param log_dir: folder for the envs' Monitor files.
    """
    from agents.style_sac import StyleSAC
    from agents.training.config import algorithm_kwargs
    from agents.training.experiment import WallClockLimit, make_env
    from benchmarks.common import style_sac_config, synchronize

    start = time.monotonic()
    config = style_sac_config(size, overrides={"use_amp": amp, "buffer_size": 1000})
    config.update(n_envs=n_envs, learning_starts=config["batch_size"])
    env = make_env(config, log_dir / f"{size}px_amp{int(amp)}_{n_envs}envs", str(device), resume=False)
    try:
        model = StyleSAC(config["policy"], env, seed=0, device=device, **algorithm_kwargs(config))
        model.learn(config["batch_size"] + 3 * n_envs)  # fill a batch, then a few updates (CUDA/cuDNN warm-up)
        synchronize(device)
        setup_s = time.monotonic() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps, updates = model.num_timesteps, model._n_updates
        begin = time.perf_counter()
        model.learn(10**9, callback=WallClockLimit(max(seconds - setup_s, 2.0)), reset_num_timesteps=False)
        synchronize(device)
        wall = time.perf_counter() - begin
    finally:
        env.close()
    steps, updates = model.num_timesteps - steps, model._n_updates - updates
    return {
        "size": size,
        "amp": amp,
        "n_envs": n_envs,
        "env_steps": steps,
        "updates": updates,
        "wall_s": wall,
        "env_steps_per_s": steps / wall,
        "updates_per_s": updates / wall,
        "setup_s": setup_s,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None,
        "note": "",
    }


def stage_train(args: argparse.Namespace, deadline: float, emit: Emit) -> None:
    """Every (n_envs, size, AMP) setting, the time left split evenly over the settings still to measure.

    A setting that raises is emitted with its error and the next one runs; one that cannot fit any more (less
    time left than the longest set-up so far plus 2 s of measurement) is emitted as not measured.

    :param args: the suite's arguments (``device``, ``image_size``, ``n_envs``, ``work_dir``).
    :param deadline: when to be done (``time.time()`` seconds).
    :param emit: receives each row.
    """
    from benchmarks.common import configure_torch

    configure_torch(None)
    device = torch.device(args.device)
    sizes = [args.image_size] if args.image_size else [128, 256]
    settings = [(n_envs, size, amp) for n_envs in args.n_envs for size in sizes for amp in (False, True)]
    longest_setup = 0.0
    for i, (n_envs, size, amp) in enumerate(settings):
        left = deadline - time.time()
        if left < longest_setup + 2.0:
            emit(
                {
                    "size": size,
                    "amp": amp,
                    "n_envs": n_envs,
                    "note": f"not measured: {left:.0f} s left, set-up took up to {longest_setup:.0f} s",
                }
            )
            continue
        try:
            row = measure_training(size, amp, n_envs, device, left / (len(settings) - i), args.work_dir / "train")
        except Exception as exc:  # a failing setting is recorded, the next one runs
            row = {"size": size, "amp": amp, "n_envs": n_envs, "note": f"error: {type(exc).__name__}: {exc}"}
        longest_setup = max(longest_setup, row.get("setup_s", 0.0))
        emit(row)


# ---------------------------------------------------------------------------------------------- stage: env
#: The env stage's vec envs (:data:`benchmarks.env_throughput.VEC_ENVS` less ``subproc``, whose forked workers
#: cannot use CUDA), env counts and image sides.
ENV_KINDS = ("batched", "batched-bf16", "sync")
ENV_COUNTS = (1, 16, 256)
ENV_SIZES = (64, 256)


def env_estimate(reference: Row | None, kind: str, size: int, n_envs: int, calls: int) -> float:
    """Seconds a setting of the env stage is expected to take, from a measured one: its steps' time scaled by
    the pixels per step (``n_envs * size**2``), plus its set-up (scaled too for ``sync``, which builds N envs).

    :param reference: a measured row of the stage (``wall_s``, ``step_ms``, ``floor_ms``, ``size``, ``n_envs``);
        ``None``: nothing measured yet, no estimate (0 s).
    :param kind: the setting's vec env.
    :param size: the setting's image side.
    :param n_envs: the setting's env count.
    :param calls: env steps and floor calls per setting, warm-up included.
    """
    if reference is None:
        return 0.0
    scale = n_envs * size**2 / (reference["n_envs"] * reference["size"] ** 2)
    work = calls * (reference["step_ms"] + reference["floor_ms"]) / 1e3
    setup = max(reference["wall_s"] - work, 0.0)
    return (setup * scale if kind == "sync" else setup) + work * scale


def stage_env(args: argparse.Namespace, deadline: float, emit: Emit) -> None:
    """Env steps/s of every (size, N, vec env) setting against the batched VGG-19 floor
    (:func:`benchmarks.env_throughput.measure`: 20 timed steps in 2 rounds after 5 of warm-up; the dry run: 10 in
    1 round, no warm-up).

    A setting whose estimate (:func:`env_estimate`, from the last measured setting of its vec env, else of
    ``batched``) exceeds the time left is emitted as not measured; one that raises is emitted with its error and
    the next one runs.

    :param args: the suite's arguments (``device``, ``image_size``).
    :param deadline: when to be done (``time.time()`` seconds).
    :param emit: receives each row.
    """
    from benchmarks.common import configure_torch
    from benchmarks.env_throughput import measure

    configure_torch(None)
    sizes = [args.image_size] if args.image_size else list(ENV_SIZES)
    steps, rounds, warmup = (10, 1, 0) if args.image_size else (20, 2, 5)
    measured: dict[str, Row] = {}  # vec env -> its last measured row
    for size in sizes:
        for n_envs in ENV_COUNTS:
            for kind in ENV_KINDS:
                setting = {"size": size, "n_envs": n_envs, "vec_env": kind}
                reference = measured.get(kind, measured.get("batched"))
                need = env_estimate(reference, kind, size, n_envs, steps + warmup)
                left = deadline - time.time()
                if need + 1.0 > left:
                    estimate = f", ~{need:.0f} s needed" if reference else ""
                    emit({**setting, "note": f"not measured: {max(left, 0.0):.0f} s left{estimate}"})
                    continue
                start = time.monotonic()
                try:
                    row = measure(args.device, size, n_envs, kind, steps, warmup, rounds, episode_steps=10)
                except Exception as exc:  # a failing setting is recorded, the next one runs
                    emit({**setting, "note": f"error: {type(exc).__name__}: {exc}"})
                    continue
                measured[kind] = {**row, "wall_s": time.monotonic() - start, "note": ""}
                emit(measured[kind])


# ---------------------------------------------------------------------------------------------- stage: stylize
@contextmanager
def no_context() -> Iterator[None]:
    """A context that does nothing: the full-precision variant's counterpart of ``torch.autocast``."""
    yield


def stage_stylize(args: argparse.Namespace, deadline: float, emit: Emit) -> None:
    """ms per step of every (size, variant): PyTorch float32, PyTorch float16 autocast (bfloat16 on a CPU),
    ONNX Runtime; a size whose memory, extrapolated from the variant's previous size, would not fit is skipped.
    A variant that raises is emitted with its error and the next one runs.

    :param args: the suite's arguments (``device``, ``image_size``, ``work_dir`` for the ONNX export).
    :param deadline: when to be done (``time.time()`` seconds), shared out over the (size, variant) pairs left.
    :param emit: receives each row.
    """
    from agents.inference.models import load_policy
    from agents.inference.onnx import export_step
    from benchmarks.common import configure_torch, time_calls
    from benchmarks.speed import MEMORY_FRACTION, ONNX, TORCH, free_bytes, inputs, methods_for

    configure_torch(None)
    device = torch.device(args.device)
    sizes = [args.image_size] if args.image_size else [256, 1024, 4096]
    half = torch.float16 if device.type == "cuda" else torch.bfloat16
    policy = load_policy("rlministyler", "cpu")
    onnx_path = args.work_dir / "rlministyler_step.onnx"
    export_step(policy, onnx_path)
    factories = methods_for(device, policy, onnx_path, None)
    variants = [
        ("PyTorch", "float32", factories[TORCH], no_context),
        (
            "PyTorch",
            f"{str(half).removeprefix('torch.')} (autocast)",
            factories[TORCH],
            lambda: torch.autocast(device.type, dtype=half),
        ),
        ("ONNX Runtime", "float32", factories[ONNX], no_context),
    ]
    todo = len(sizes) * len(variants)
    last_peak: dict[tuple[str, str], tuple[int, int]] = {}  # variant -> (size, peak bytes) of its previous size
    for size in sizes:
        content, style = inputs(size)
        for method, precision, factory, context in variants:
            row: Row = {
                "method": method,
                "precision": precision,
                "device": str(device),
                "size": size,
                "ms_per_step": None,
                "repeats": 0,
                "peak_mb": None,
                "note": "",
            }
            share, todo = (deadline - time.time()) / todo, todo - 1
            if isinstance(factory, str):
                emit({**row, "note": factory})
                continue
            previous = last_peak.get((method, precision))
            need = previous[1] * (size / previous[0]) ** 2 if previous else 0.0
            if need > MEMORY_FRACTION * free_bytes(device):
                emit({**row, "note": f"skipped: needs ~{need / 2**30:.1f} GiB, {free_bytes(device) / 2**30:.1f} free"})
                continue
            try:
                call = factory(content, style)

                def step(call: Callable[[], Any] = call, context: Callable[[], Any] = context) -> Any:
                    with context():
                        return call()

                timing = time_calls(step, device, repeats=50, budget_s=max(share / 2, 0.1))
            except Exception as exc:  # a failing variant is recorded, the next one runs
                emit({**row, "note": f"error: {type(exc).__name__}: {exc}"})
                continue
            last_peak[(method, precision)] = (size, max(timing.peak_bytes, 1))
            ort_cuda = method == "ONNX Runtime" and device.type == "cuda"
            emit(
                {
                    **row,
                    "ms_per_step": 1e3 * timing.median,
                    "repeats": len(timing.times),
                    "warmup_ms": 1e3 * timing.warmup_s,
                    "peak_mb": None if ort_cuda else timing.peak_bytes / 1e6,
                    "note": "ONNX Runtime's CUDA memory is not visible to torch" if ort_cuda else "",
                }
            )
