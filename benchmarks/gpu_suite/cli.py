"""One unattended run that shows training and inference on an accelerator: ``python -m benchmarks.gpu_suite``.

The command line: its flags, the order of the stages, and each stage's cap; ``--stage`` (internal) runs one
stage in the child process that :mod:`benchmarks.gpu_suite.runner` starts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import RESULTS_DIR, benchmark_parser
from benchmarks.gpu_suite.finetune import run_finetune, stage_evaluate
from benchmarks.gpu_suite.report import write_reports
from benchmarks.gpu_suite.runner import STAGES, Emit, StageResult, emitter, run_in_child, run_tests, stage_cap
from benchmarks.gpu_suite.stages import stage_env, stage_machine, stage_stylize, stage_train
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR

STAGE_FUNCTIONS: dict[str, Callable[[argparse.Namespace, float, Emit], None]] = {
    "machine": stage_machine,
    "train": stage_train,
    "env": stage_env,
    "stylize": stage_stylize,
    "evaluate": stage_evaluate,
}


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
    """Command-line arguments (README: "GPU suite").

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
        help="dry run: every training, env, stylisation and fine-tune size becomes this (evaluation: S, 2S)",
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
        cap = stage_cap(stage, running[running.index(stage) :], fixed, deadline - time.monotonic())
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
