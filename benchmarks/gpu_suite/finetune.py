"""The ``finetune`` stage: fine-tune the released model for the time left, then compare it with the released one.

Training is ``agents.train_sac --init rlministyler --max-minutes`` in a child process; the evaluation
(:func:`stage_evaluate`, in a child too) is :mod:`benchmarks.quality` of both models on held-out pairs at two
sizes. ``--corpus`` splits a corpus into training and held-out folders first (:mod:`benchmarks.corpus`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from benchmarks.common import Row
from benchmarks.gpu_suite.runner import Emit, StageResult, run_in_child, run_process

#: Seconds the fine-tune's process needs besides training (start-up, VGG-19, saving, ``sequence.png``).
FINETUNE_OVERHEAD_S = 30.0
#: Share of the fine-tune stage kept for the evaluation of the fine-tuned model.
EVAL_SHARE = 0.3


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
    from agents.training.experiment import next_run_dir

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
