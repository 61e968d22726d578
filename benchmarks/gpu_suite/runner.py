"""Runs the suite's stages: each in a child process in its own process group, under a wall-clock cap.

A stage process appends its rows to a JSON-lines file, so what it measured before a crash or a kill at its cap
is kept; :func:`stage_cap` shares the budget left among the stages still to run. The ``tests`` stage (pytest
with the device visible, counts per outcome) runs here too: it is a child process and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Row

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("machine", "tests", "train", "env", "stylize", "finetune")
#: Share of the remaining budget each stage gets when it starts (renormalised over the stages still to run,
#: so a skipped stage's share goes to the later ones; the fine-tune takes what is left).
WEIGHTS = {"tests": 3.0, "train": 3.0, "env": 2.0, "stylize": 2.0, "finetune": 4.0}
#: Cap of the machine stage (it takes seconds; what it leaves goes to the later stages).
MACHINE_CAP_S = 60.0
#: Seconds a stage gets after SIGTERM at its cap before SIGKILL (``train_sac`` saves a checkpoint on SIGTERM).
GRACE_S = 15.0

Emit = Callable[[Row], None]


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
    """The suite run as one stage (``--stage``) with the suite's settings.

    :param args: the suite's arguments.
    :param stage: a key of :data:`benchmarks.gpu_suite.cli.STAGE_FUNCTIONS`.
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
    """Run one of the suite's stage functions in a child process (``python -m benchmarks.gpu_suite --stage``).

    :param args: the suite's arguments.
    :param stage: a key of :data:`benchmarks.gpu_suite.cli.STAGE_FUNCTIONS`.
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


def stage_cap(stage: str, later: list[str], fixed: dict[str, float], left_s: float) -> float:
    """The cap of ``stage`` when it starts: its ``--cap``, else its share (:data:`WEIGHTS`) of the time left.

    :param stage: the stage about to start.
    :param later: the stages still to run, ``stage`` first (skipped ones left out).
    :param fixed: ``--cap`` seconds per stage (:func:`benchmarks.gpu_suite.cli.caps`); kept for their stages.
    :param left_s: seconds to the suite's deadline.
    :return: seconds (at least 10 for a stage without a fixed cap).
    """
    if stage in fixed:
        return fixed[stage]
    left = left_s - sum(fixed.get(s, 0.0) for s in later)
    if stage == "machine":
        return min(MACHINE_CAP_S, max(left, 10.0))
    flexible = [s for s in later if s not in fixed and s != "machine"]
    return max(left * WEIGHTS[stage] / sum(WEIGHTS[s] for s in flexible), 10.0)


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
