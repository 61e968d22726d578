"""One unattended run that shows training and inference on an accelerator: ``python -m benchmarks.gpu_suite``.

    python -m benchmarks.gpu_suite --minutes 7                            # on a CUDA machine
    python -m benchmarks.gpu_suite --device cpu --minutes 1 --image-size 32 --skip tests   # dry run on a CPU

Stages, in order; each runs in its own process group with a time cap (``--cap STAGE:MINUTES``, else a share of
what is left of ``--minutes``: :data:`WEIGHTS`). A stage that fails, crashes or overruns its cap is recorded with
its error (the tail of its log) and the suite goes on; ``--skip`` leaves stages out.

1. ``machine``: device name, torch, CUDA, cuDNN and driver versions (``nvidia-smi`` when present).
2. ``tests``: ``python -m pytest -m gpu``, then the rest (``-m "not gpu"``), with the device visible; counts of
   passed / failed / skipped tests (also of a run cut short by the cap).
3. ``train``: StyleSAC training throughput (``agents/hyperparams/style_sac.yml``, the built-in samples), env
   steps/s and updates/s at 128 and 256 px, AMP off and on, ``--n-envs`` 1 and 8 (``SubprocVecEnv``), with
   the peak GPU memory of the learner (``torch.cuda.max_memory_allocated``).
4. ``stylize``: ms per stylisation step of the released RLMiniStyler at 256, 1024 and 4096 px, uint8 in and
   out (:mod:`benchmarks.speed`): PyTorch float32, PyTorch float16 (autocast; bfloat16 on a CPU) and ONNX
   Runtime (its CUDA provider when the ``onnxruntime-gpu`` build is installed), with peak memory.
5. ``finetune``: with what is left, ``python -m agents.train_sac --init rlministyler --max-minutes ...`` at
   256 px on the training images, then :mod:`benchmarks.quality` of the fine-tuned and the released model on
   ``--eval-pairs`` held-out pairs at 256 and 512 px. ``--corpus DIR`` splits a corpus (``photos/``, ``art/``)
   with :mod:`benchmarks.corpus` into both; else ``--content-dir`` / ``--style-dir`` (default: the built-in
   samples) and ``--eval-content-dir`` / ``--eval-style-dir`` (default: the same folders, then not held out).

``--image-size S`` (the dry run) replaces every size: training and fine-tuning at ``S``, stylisation at ``S``,
evaluation at ``S`` and ``2S``. Writes ``gpu_suite.{md,csv,json}`` (stage statuses, targets, every table),
``gpu_<stage>.{md,csv,json}`` per stage, ``gpu_suite.png`` (throughput and ms/step), and the fine-tune's
``gpu_finetune_sequence.png`` and quality tables and grids under ``--out``; child logs, the ONNX export and the
fine-tune's run folder (``model.zip``) under ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, Report, Row, benchmark_parser, machine_info, pyplot, save_figure, settings_of
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("machine", "tests", "train", "stylize", "finetune")
#: Share of the remaining budget each stage gets when it starts (renormalised over the stages still to run,
#: so a skipped stage's share goes to the later ones; the fine-tune takes what is left).
WEIGHTS = {"tests": 3.0, "train": 3.0, "stylize": 2.0, "finetune": 4.0}
#: Cap of the machine stage (it takes seconds; what it leaves goes to the later stages).
MACHINE_CAP_S = 60.0
#: Seconds the fine-tune's process needs besides training (start-up, VGG-19, saving, ``sequence.png``).
FINETUNE_OVERHEAD_S = 30.0
#: Share of the fine-tune stage kept for the evaluation of the fine-tuned model.
EVAL_SHARE = 0.3
#: Seconds a stage gets after SIGTERM at its cap before SIGKILL (``train_sac`` saves a checkpoint on SIGTERM).
GRACE_S = 15.0
#: Targets of issue 14, reported against: ``(stage, description, image side, limit)``.
TARGETS = (
    ("stylize", "PyTorch float16 at 256 px: ms/step < 2", 256, 2.0),
    ("stylize", "PyTorch float16 at 4096 px: ms/step < 100", 4096, 100.0),
    ("train", "updates/s >= 20 at 256 px with AMP (1 env)", 256, 20.0),
)

Emit = Callable[[Row], None]


# ---------------------------------------------------------------------------------------------- running stages
@dataclass
class StageResult:
    """What one stage left: its status, time, cap, error (if any) and rows."""

    stage: str
    status: str  #: ``ok``, ``failed``, ``timeout`` or ``skipped``
    seconds: float = 0.0
    cap_s: float = 0.0
    error: str = ""
    rows: list[Row] = field(default_factory=list)


def run_process(
    cmd: list[str], timeout_s: float, log: Path, ok_codes: tuple[int, ...] = (0,)
) -> tuple[str, float, str]:
    """Run ``cmd`` in the repository root in its own process group, output appended to ``log``.

    At ``timeout_s`` the group gets SIGTERM, then SIGKILL after :data:`GRACE_S` (so env workers and test
    subprocesses end too).

    :param cmd: the command.
    :param timeout_s: wall-clock cap in seconds.
    :param log: file receiving stdout and stderr.
    :param ok_codes: exit statuses that count as success.
    :return: status (``ok``, ``failed``, ``timeout``), seconds, and the error (the log's tail) unless ``ok``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        offset = out.tell()  # where this command's output starts
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout_s, 1.0))
            status = "ok" if code in ok_codes else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code, status = proc.returncode, "timeout"
    seconds = time.monotonic() - start
    if status == "ok":
        return status, seconds, ""
    with open(log, errors="replace") as f:
        f.seek(offset)
        tail = [line.strip()[:300] for line in f.read().splitlines() if line.strip()][-6:]
    reason = f"cap of {timeout_s:.0f} s reached" if status == "timeout" else f"exit status {code}"
    return status, seconds, f"{reason}; {log.name}: " + (" | ".join(tail) if tail else "(no output)")


def read_rows(path: Path) -> list[Row]:
    """The JSON-lines rows a stage process emitted (a line cut short by a kill is ignored).

    :param path: the stage's rows file (missing: no rows).
    """
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def child_command(args: argparse.Namespace, stage: str, deadline: float, rows: Path) -> list[str]:
    """This module run as one stage (``--stage``) with the suite's settings.

    :param args: the suite's arguments.
    :param stage: a key of :data:`STAGE_FUNCTIONS`.
    :param deadline: when the stage should stop starting new work (``time.time()`` seconds).
    :param rows: the JSON-lines file the stage appends its rows to.
    """
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gpu_suite",
        "--stage",
        stage,
        "--deadline",
        f"{deadline:.1f}",
        "--rows",
        str(rows),
        "--device",
        args.device,
        "--out",
        str(args.out),
        "--work-dir",
        str(args.work_dir),
        "--eval-pairs",
        str(args.eval_pairs),
        "--content-dir",
        str(args.content_dir),
        "--style-dir",
        str(args.style_dir),
        "--n-envs",
        *map(str, args.n_envs),
    ]
    if args.image_size:
        cmd += ["--image-size", str(args.image_size)]
    if args.eval_content_dir:
        cmd += ["--eval-content-dir", str(args.eval_content_dir)]
    if args.eval_style_dir:
        cmd += ["--eval-style-dir", str(args.eval_style_dir)]
    return cmd


def run_in_child(args: argparse.Namespace, stage: str, cap_s: float) -> StageResult:
    """Run one of this module's stage functions in a child process.

    :param args: the suite's arguments.
    :param stage: a key of :data:`STAGE_FUNCTIONS`.
    :param cap_s: the child's wall-clock cap in seconds.
    """
    rows_path = args.work_dir / "rows" / f"{stage}.jsonl"
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    rows_path.unlink(missing_ok=True)
    # The child stops starting new work a little before the cap (its start-up counts), so it ends by itself.
    deadline = time.time() + 0.9 * cap_s - 2.0
    status, seconds, error = run_process(
        child_command(args, stage, deadline, rows_path), cap_s, args.work_dir / "logs" / f"{stage}.log"
    )
    return StageResult(stage, status, seconds, cap_s, error, read_rows(rows_path))


def emitter(path: Path) -> Emit:
    """A function appending each row to ``path`` as one JSON line, flushed (kept if the process is killed).

    :param path: the rows file.
    """

    def emit(row: Row) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    return emit


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


# ---------------------------------------------------------------------------------------------- stage: tests
PYTEST_OUTCOME = re.compile(r"\b(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
#: pytest's closing line, e.g. ``==== 3 passed, 1 skipped in 4.20s ====``.
PYTEST_SUMMARY = re.compile(r"^=+ .*\bin [\d.]+s\b")


def run_tests(args: argparse.Namespace, cap_s: float) -> StageResult:
    """``pytest -m gpu``, then ``pytest -m "not gpu"`` with what is left of ``cap_s``; counts per outcome.

    :param args: the suite's arguments (``work_dir`` for the logs).
    :param cap_s: wall-clock cap of both runs together, in seconds.
    """
    start = time.monotonic()
    rows: list[Row] = []
    errors: list[str] = []
    status = "ok"
    for selection in ("gpu", "not gpu"):
        left = cap_s - (time.monotonic() - start)
        log = args.work_dir / "logs" / f"tests_{selection.replace(' ', '_')}.log"
        log.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pytest", "-m", selection, "-v", "-p", "no:cacheprovider", "tests"]
        outcome, seconds, error = run_process(cmd, left, log, ok_codes=(0, 5))  # 5: the selection is empty
        lines = log.read_text(errors="replace").splitlines()
        counts = {name.lower(): 0 for name in ("PASSED", "FAILED", "SKIPPED", "ERROR")}
        for line in lines:
            match = PYTEST_OUTCOME.search(line) if "::" in line else None
            if match and match.group(1).lower() in counts:
                counts[match.group(1).lower()] += 1
        summary = next((line.strip("= ") for line in reversed(lines) if PYTEST_SUMMARY.match(line)), "")
        rows.append(
            {
                "selection": f"-m {selection!r}",
                "status": outcome,
                **counts,
                "seconds": seconds,
                "summary": summary or error,
            }
        )
        if outcome != "ok":
            status = "timeout" if outcome == "timeout" else "failed"
            errors.append(f"-m {selection!r}: {error}")
    return StageResult("tests", status, time.monotonic() - start, cap_s, "; ".join(errors), rows)


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
    from agents.experiment import WallClockLimit, algorithm_kwargs, make_env
    from agents.style_sac import StyleSAC
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
    from agents.export_onnx import export_step
    from agents.models import load_policy
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


# ---------------------------------------------------------------------------------------------- stage: finetune
def eval_sizes(args: argparse.Namespace) -> list[int]:
    """Evaluation sizes: 256 and 512 px, or ``S`` and ``2S`` in a dry run.

    :param args: the suite's arguments (``image_size``).
    """
    return [args.image_size, 2 * args.image_size] if args.image_size else [256, 512]


def stage_evaluate(args: argparse.Namespace, deadline: float, emit: Emit) -> None:
    """:mod:`benchmarks.quality` of the fine-tuned and the released model on the held-out pairs at each size;
    one row per (size, step) with both models' losses.

    :param args: the suite's arguments (evaluation folders, ``eval_pairs``, ``device``, ``out``, ``work_dir``).
    :param deadline: unused: the stage runs to its end or to its cap.
    :param emit: receives each row.
    """
    from benchmarks import quality

    model = args.work_dir / "finetune_model.zip"
    content_dir = args.eval_content_dir or args.content_dir
    style_dir = args.eval_style_dir or args.style_dir
    for size in eval_sizes(args):
        summary = quality.main(
            [
                "--model",
                "rlministyler",
                str(model),
                "--content-dir",
                str(content_dir),
                "--style-dir",
                str(style_dir),
                "--pairs",
                str(args.eval_pairs),
                "--size",
                str(size),
                "--strengths",
                "--gatys-iterations",
                "--device",
                args.device,
                "--out",
                str(args.out),
                "--name",
                f"gpu_finetune_quality_{size}",
            ]
        )
        label = quality.model_label(str(model))
        by_key = {(r["method"], r["setting"]): r for r in summary}
        for setting in [r["setting"] for r in summary if r["method"] == "rlministyler"]:
            released, tuned = by_key[("rlministyler", setting)], by_key[(label, setting)]
            emit(
                {
                    "size": size,
                    "step": int(str(setting).split()[-1]),
                    "released_content": released["content_loss"],
                    "finetuned_content": tuned["content_loss"],
                    "released_style": released["style_loss"],
                    "finetuned_style": tuned["style_loss"],
                    "released_ssim": released["ssim"],
                    "finetuned_ssim": tuned["ssim"],
                    "no_worse_on_both": bool(
                        tuned["content_loss"] <= released["content_loss"]
                        and tuned["style_loss"] <= released["style_loss"]
                    ),
                    "pairs": tuned["pairs"],
                }
            )


def run_finetune(args: argparse.Namespace, cap_s: float) -> StageResult:
    """Fine-tune from the released weights with ``agents.train_sac --max-minutes``, then evaluate it against
    the released model (:func:`stage_evaluate`, in a child) on the held-out pairs.

    With ``--corpus``, the corpus is first split by :mod:`benchmarks.corpus` into training and held-out folders,
    which replace ``--content-dir``, ``--style-dir`` and the evaluation folders in ``args``.

    :param args: the suite's arguments.
    :param cap_s: wall-clock cap of training and evaluation together, in seconds.
    """
    from agents.experiment import next_run_dir

    start = time.monotonic()
    if args.corpus:
        from benchmarks.corpus import materialise, split_corpus

        folder = args.work_dir / "corpus_split"
        materialise(split_corpus(args.corpus), args.corpus, folder)
        args.content_dir, args.style_dir = folder / "train" / "photos", folder / "train" / "art"
        args.eval_content_dir, args.eval_style_dir = folder / "eval" / "photos", folder / "eval" / "art"
    size = args.image_size or 256
    train_cap = (1.0 - EVAL_SHARE) * cap_s - (time.monotonic() - start)
    log_folder = args.work_dir / "finetune"
    run_dir = next_run_dir(log_folder, "NST-v0")
    cmd = [
        sys.executable,
        "-m",
        "agents.train_sac",
        "--init",
        "rlministyler",
        "--image-size",
        str(size),
        "-n",
        str(10**9),
        "--max-minutes",
        f"{max(train_cap - FINETUNE_OVERHEAD_S, 5.0) / 60:.3f}",
        "--content-dir",
        str(args.content_dir),
        "--style-dir",
        str(args.style_dir),
        "--device",
        args.device,
        "-f",
        str(log_folder),
        "--save-freq",
        "0",
        "--eval-freq",
        "0",
        "--no-progress",
        "-v",
        "1",
    ]
    status, seconds, error = run_process(cmd, train_cap, args.work_dir / "logs" / "finetune_train.log")
    rows: list[Row] = []
    model = run_dir / "model.zip"
    if status == "ok" and model.is_file():
        shutil.copyfile(model, args.work_dir / "finetune_model.zip")
        shutil.copyfile(run_dir / "sequence.png", args.out / "gpu_finetune_sequence.png")
        evaluated = run_in_child(args, "evaluate", cap_s - (time.monotonic() - start))
        rows, status, error = evaluated.rows, evaluated.status, evaluated.error
    elif status == "ok":
        status, error = "failed", f"{model} was not written"
    for row in rows:
        row["run"] = str(run_dir)
    return StageResult("finetune", status, time.monotonic() - start, cap_s, error, rows)


STAGE_FUNCTIONS: dict[str, Callable[[argparse.Namespace, float, Emit], None]] = {
    "machine": stage_machine,
    "train": stage_train,
    "stylize": stage_stylize,
    "evaluate": stage_evaluate,
}


# ---------------------------------------------------------------------------------------------- report
def dominance(rows: list[Row]) -> list[Row]:
    """Per evaluation size: whether the fine-tuned model is no worse than the released one at every step.

    :param rows: :func:`stage_evaluate`'s rows.
    """
    sizes = sorted({r["size"] for r in rows})
    return [
        {
            "size": s,
            "steps": sum(r["size"] == s for r in rows),
            "dominates_released": all(r["no_worse_on_both"] for r in rows if r["size"] == s),
        }
        for s in sizes
    ]


def targets(results: dict[str, StageResult], dry_run: bool) -> list[Row]:
    """The issue's targets against the measured values (``-`` when not measured).

    :param results: every stage's result.
    :param dry_run: sizes were replaced by ``--image-size`` (the targets' sizes were not measured).
    """
    out = []
    for stage, what, size, limit in TARGETS:
        rows = results[stage].rows if stage in results else []
        if stage == "stylize":
            values = [
                r["ms_per_step"]
                for r in rows
                if r.get("size") == size
                and r.get("method") == "PyTorch"
                and str(r.get("precision", "")).startswith("float16")
                and r.get("ms_per_step")
            ]
            met = values[0] < limit if values else None
        else:
            values = [
                r["updates_per_s"]
                for r in rows
                if r.get("size") == size and r.get("amp") and r.get("n_envs") == 1 and r.get("updates_per_s")
            ]
            met = values[0] >= limit if values else None
        out.append(
            {
                "target": what,
                "measured": values[0] if values else None,
                "met": "-" if met is None else ("yes" if met else "no"),
                "note": "dry run: sizes replaced by --image-size" if dry_run else "",
            }
        )
    return out


def plot(results: dict[str, StageResult], path: Path) -> None:
    """Training throughput per setting and stylisation ms/step against size, side by side.

    :param results: every stage's result.
    :param path: the PNG to write.
    """
    plt = pyplot()
    fig, (ax_train, ax_style) = plt.subplots(1, 2, figsize=(12, 4.5))
    train = [r for r in results["train"].rows if r.get("updates_per_s")] if "train" in results else []
    labels = [f"{r['size']}px\n{'AMP' if r['amp'] else 'fp32'}\n{r['n_envs']} env" for r in train]
    x = range(len(train))
    ax_train.bar([i - 0.2 for i in x], [r["updates_per_s"] for r in train], width=0.4, label="updates/s")
    ax_train.bar([i + 0.2 for i in x], [r["env_steps_per_s"] for r in train], width=0.4, label="env steps/s")
    ax_train.set_xticks(list(x), labels, fontsize=7)
    ax_train.set_ylabel("per second")
    ax_train.set_title("StyleSAC training throughput", fontsize=10)
    ax_train.legend(fontsize=8)
    style = [r for r in results["stylize"].rows if r.get("ms_per_step")] if "stylize" in results else []
    for key in dict.fromkeys((r["method"], r["precision"]) for r in style):
        points = [r for r in style if (r["method"], r["precision"]) == key]
        ax_style.plot([r["size"] for r in points], [r["ms_per_step"] for r in points], "o-", label=" ".join(key))
    ax_style.set_xscale("log", base=2)
    ax_style.set_yscale("log")
    ax_style.set_xlabel("image side (px)")
    ax_style.set_ylabel("ms per stylisation step (median)")
    ax_style.set_title("Released RLMiniStyler, one step, uint8 in and out", fontsize=10)
    ax_style.grid(alpha=0.3, which="both")
    if style:
        ax_style.legend(fontsize=8)
    save_figure(fig, path)


#: Per stage: title, columns and notes of its own report.
STAGE_TABLES: dict[str, tuple[str, list[str], list[str]]] = {
    "machine": ("Machine and device", ["key", "value"], []),
    "tests": (
        "Test suite with the device visible",
        ["selection", "status", "passed", "failed", "skipped", "error", "seconds", "summary"],
        ["Counts are read from `pytest -v` lines, so a run cut short by the cap still shows what ran."],
    ),
    "train": (
        "StyleSAC training throughput",
        [
            "size",
            "amp",
            "n_envs",
            "env_steps",
            "updates",
            "wall_s",
            "env_steps_per_s",
            "updates_per_s",
            "setup_s",
            "peak_gpu_mb",
            "note",
        ],
        [
            "One update of batch 8 per vec-env step (`train_freq: 1`, `gradient_steps: 1`): with 8 envs an update "
            "follows 8 env steps. Measured after a warm-up (a filled batch and a few updates); `peak_gpu_mb`: "
            "`torch.cuda.max_memory_allocated` of the learner's process over the measurement (env workers have "
            "their own)."
        ],
    ),
    "stylize": (
        "Stylisation: ms per step of the released RLMiniStyler",
        ["method", "precision", "device", "size", "ms_per_step", "repeats", "peak_mb", "note"],
        [
            "Median of up to 50 calls after a warm-up call, uint8 arrays in and out (host-device copies "
            "included), device synchronised (`benchmarks.common.time_calls`); `peak_mb`: what the warm-up call "
            "added (CUDA: `torch.cuda.max_memory_allocated`)."
        ],
    ),
    "finetune": (
        "Fine-tuned (from the released weights) vs released, held-out pairs",
        [
            "size",
            "step",
            "released_content",
            "finetuned_content",
            "released_style",
            "finetuned_style",
            "released_ssim",
            "finetuned_ssim",
            "no_worse_on_both",
            "pairs",
        ],
        [
            "MicroAST protocol (`benchmarks.quality`), means over the pairs; lower content and style losses "
            "are better. `no_worse_on_both`: the fine-tuned model's content and style losses are both at most "
            "the released model's at that step."
        ],
    ),
}


def write_reports(args: argparse.Namespace, results: dict[str, StageResult], seconds: float) -> list[Path]:
    """Every stage's report, the summary report and the figure under ``args.out``.

    :param args: the suite's arguments.
    :param results: every stage's result, in stage order.
    :param seconds: the suite's wall-clock time so far.
    :return: the files written.
    """
    machine = machine_info("cpu")
    facts = {r["key"]: r["value"] for r in results["machine"].rows} if "machine" in results else {}
    machine.update(device=args.device, **{k: facts[k] for k in ("gpu", "cuda", "driver_version") if k in facts})
    settings = {**settings_of(args), "stage_caps_s": {s: r.cap_s for s, r in results.items()}}
    dry_run = bool(args.image_size)
    held_out = args.eval_content_dir is not None or args.eval_style_dir is not None
    paths: list[Path] = []
    tables: list[tuple[str, list[Row], list[str]]] = []
    for stage, result in results.items():
        if stage not in STAGE_TABLES or result.status == "skipped":
            continue
        title, columns, notes = STAGE_TABLES[stage]
        notes = [*notes, f"Stage status: {result.status}" + (f" ({result.error})" if result.error else "") + "."]
        extra = []
        if stage == "finetune":
            extra.append(
                (
                    "Does the fine-tuned model dominate the released one?",
                    dominance(result.rows),
                    ["size", "steps", "dominates_released"],
                )
            )
            if not held_out:
                notes.append(
                    "The evaluation pairs come from the training folders (no `--eval-content-dir` / "
                    "`--eval-style-dir`): they are not held out."
                )
        report = Report(
            name=f"gpu_{stage}",
            title=title,
            columns=columns,
            rows=result.rows,
            settings=settings,
            machine=machine,
            notes=notes,
            extra_tables=extra,
        )
        paths += report.write(args.out)
        tables += [(title, result.rows, columns), *extra]
    stage_rows = [
        {
            "stage": r.stage,
            "status": r.status,
            "seconds": r.seconds,
            "cap_s": r.cap_s,
            "rows": len(r.rows),
            "error": r.error,
        }
        for r in results.values()
    ]
    plot(results, args.out / "gpu_suite.png")
    summary = Report(
        name="gpu_suite",
        title=f"GPU suite on {args.device}" + (f" (dry run at {args.image_size} px)" if dry_run else ""),
        columns=["stage", "status", "seconds", "cap_s", "rows", "error"],
        rows=stage_rows,
        settings=settings,
        machine=machine,
        notes=[
            f"Total {seconds:.0f} s of a {args.minutes:g} min budget. Each stage ran in its own process group "
            "under its cap; a failed or overrun stage is recorded and the suite goes on. Per-stage tables follow "
            "(also `gpu_<stage>.{md,csv,json}`); figure: `gpu_suite.png`."
        ],
        extra_tables=[
            ("Targets (issue 14)", targets(results, dry_run), ["target", "measured", "met", "note"]),
            *tables,
        ],
    )
    return [*paths, *summary.write(args.out), args.out / "gpu_suite.png"]


# ---------------------------------------------------------------------------------------------- main
def caps(args: argparse.Namespace) -> dict[str, float]:
    """``--cap STAGE:MINUTES`` as seconds per stage.

    :param args: the suite's arguments.
    """
    out = {}
    for item in args.cap:
        stage, _, minutes = item.partition(":")
        if stage not in STAGES or not minutes:
            raise SystemExit(f"--cap expects STAGE:MINUTES with STAGE in {STAGES}, got {item!r}.")
        out[stage] = 60.0 * float(minutes)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring).

    :param argv: the arguments (default: ``sys.argv[1:]``).
    """
    p = benchmark_parser(
        __doc__,
        device="cuda" if torch.cuda.is_available() else "cpu",
        device_help="cuda, cuda:1, cpu, ...",
        threads_help=None,
        out=RESULTS_DIR / "gpu",
        out_help="tables and figures",
    )
    p.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of the whole suite")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("runs/gpu_suite"),
        help="child logs, ONNX export, the fine-tune's run folder",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="dry run: every training, stylisation and fine-tune size becomes this (evaluation: S, 2S)",
    )
    p.add_argument("--skip", nargs="*", default=[], choices=STAGES, help="stages to leave out")
    p.add_argument("--cap", nargs="*", default=[], metavar="STAGE:MINUTES", help="fixed cap for a stage")
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 8], help="env counts of the training throughput")
    p.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="corpus with photos/ and art/ (e.g. ../shared/corpus), split by benchmarks.corpus into the "
        "fine-tune's training folders and held-out evaluation folders (replaces the four below)",
    )
    p.add_argument("--content-dir", type=Path, default=SAMPLE_CONTENT_DIR, help="fine-tune's training photos")
    p.add_argument("--style-dir", type=Path, default=SAMPLE_STYLE_DIR, help="fine-tune's training styles")
    p.add_argument(
        "--eval-content-dir",
        type=Path,
        default=None,
        help="held-out photos for the evaluation (default: --content-dir, then not held out)",
    )
    p.add_argument(
        "--eval-style-dir",
        type=Path,
        default=None,
        help="held-out styles for the evaluation (default: --style-dir, then not held out)",
    )
    p.add_argument("--eval-pairs", type=int, default=8, help="evaluation pairs drawn from the held-out folders")
    p.add_argument("--stage", default=None, choices=sorted(STAGE_FUNCTIONS), help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every stage under its cap, write the reports; ``--stage`` runs one stage (in a child process).

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :return: 0 (a failing stage is recorded in the report, not in the exit status).
    """
    args = parse_args(argv)
    args.out, args.work_dir = args.out.resolve(), args.work_dir.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.stage:
        STAGE_FUNCTIONS[args.stage](args, args.deadline, emitter(args.rows))
        return 0
    fixed = caps(args)
    start = time.monotonic()
    deadline = start + 60.0 * args.minutes
    results: dict[str, StageResult] = {}
    running = [s for s in STAGES if s not in args.skip]
    for stage in STAGES:
        if stage not in running:
            results[stage] = StageResult(stage, "skipped", error="--skip")
            continue
        later = running[running.index(stage) :]
        flexible = [s for s in later if s not in fixed and s != "machine"]
        left = deadline - time.monotonic() - sum(fixed.get(s, 0.0) for s in later)
        if stage in fixed:
            cap = fixed[stage]
        elif stage == "machine":
            cap = min(MACHINE_CAP_S, max(left, 10.0))
        else:
            cap = max(left * WEIGHTS[stage] / sum(WEIGHTS[s] for s in flexible), 10.0)
        print(f"== {stage}: cap {cap:.0f} s", flush=True)
        began = time.monotonic()
        try:
            if stage == "tests":
                results[stage] = run_tests(args, cap)
            elif stage == "finetune":
                results[stage] = run_finetune(args, cap)
            else:
                results[stage] = run_in_child(args, stage, cap)
        except Exception as exc:  # the suite's own failure in one stage is recorded too
            results[stage] = StageResult(
                stage, "failed", time.monotonic() - began, cap, f"gpu_suite: {type(exc).__name__}: {exc}"
            )
        r = results[stage]
        print(f"== {stage}: {r.status} in {r.seconds:.0f} s, {len(r.rows)} rows {r.error}", flush=True)
    write_reports(args, results, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
