"""The suite's reports: one per stage and a summary with the targets and the figure.

Writes ``gpu_suite.{md,csv,json}`` (stage statuses, targets, every table), ``gpu_<stage>.{md,csv,json}``
per stage and ``gpu_suite.png`` (training throughput and ms per stylisation step) under ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import Report, Row, machine_info, pyplot, save_figure, settings_of
from benchmarks.env_throughput import compare_with_sync
from benchmarks.gpu_suite.runner import StageResult

#: Targets of issue 14, reported against: ``(stage, description, image side, limit)``.
TARGETS = (
    ("stylize", "PyTorch float16 at 256 px: ms/step < 2", 256, 2.0),
    ("stylize", "PyTorch float16 at 4096 px: ms/step < 100", 4096, 100.0),
    ("train", "updates/s >= 20 at 256 px with AMP (1 env)", 256, 20.0),
)


def dominance(rows: list[Row]) -> list[Row]:
    """Per evaluation size: whether the fine-tuned model is no worse than the released one at every step.

    :param rows: :func:`benchmarks.gpu_suite.finetune.stage_evaluate`'s rows.
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
    "env": (
        "NST-v0 env throughput: batched env vs SyncVectorEnv",
        [
            "size",
            "n_envs",
            "vec_env",
            "steps_per_s",
            "floor_per_s",
            "ratio",
            "vs_sync",
            "step_ms",
            "floor_ms",
            "timed_steps",
            "wall_s",
            "note",
        ],
        [
            "`benchmarks.env_throughput.measure` on the suite's device: env steps/s of all N envs together, "
            "`batched` (`NSTVectorEnv`), `batched-bf16` (its bfloat16 reward pass) and `sync` (Gymnasium's "
            "`SyncVectorEnv` of N `NSTEnv`s), 10-step episodes reset inside the timed steps. `floor_per_s`: the "
            "env steps/s that the batched float32 VGG-19 pass to relu4_1 plus the style statistics of the N images "
            "(and the episode-start images) allows; `ratio` = floor time / step time (1: as fast as the floor); "
            "`vs_sync`: steps/s over `sync`'s at the same size and N. Medians of the timed blocks; `wall_s`: the "
            "setting's time, set-up included. On a CPU without native bfloat16 (AVX2) `batched-bf16` is far slower "
            "than float32."
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
        if stage == "env":
            compare_with_sync([r for r in result.rows if r.get("steps_per_s")])
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
