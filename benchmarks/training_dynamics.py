r"""Training settings side by side: same seeds, same budget, same data, judged on held-out pairs step by step.

    python -m benchmarks.corpus ../shared/corpus --out data/corpus_split             # the train/eval split
    python -m benchmarks.training_dynamics --train --workers 2 --seeds 0 1 2 \
        --settings finetune_default --pairs 24 --size 256                          # train what is missing, evaluate

Each setting (:data:`SETTINGS`) is a ``python -m agents.train_sac`` command on the corpus' *training* split
(fine-tuned from the released weights, or from scratch), run once per seed in its own folder
``RUNS/<setting>_seed<k>/`` (checkpoints every 100 steps: an interrupted run resumes). The models are then
evaluated with :mod:`benchmarks.quality` on ``--pairs`` content/style pairs of the *evaluation* split at
``--size`` px, steps 1..10, beside the released model and the unchanged photo. Written to ``--out``:

- ``training_dynamics.{md,csv,json}``: per setting and step, the mean over seeds of the style loss relative to
  the photo's own (per pair, then averaged), the content loss and SSIM, with the seeds' spread; and per run
  whether it *dominates* the released model: at the SSIM of the released model's steps 2, 5 and 10, the run's
  style-vs-SSIM curve (linear between its steps) has the lower style loss;
- ``training_dynamics_tradeoff.png``: style loss against SSIM, one curve per setting, the released model's
  for reference;
- ``training_dynamics_curves.png``: the training curves of every run (episode return, Q, temperature,
  entropy, generative losses, critic loss) from their ``logs/progress*.csv``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import cli_main, int_range
from benchmarks import quality
from benchmarks.common import Report, benchmark_parser, configure_torch, machine_info, pyplot, save_figure, settings_of
from benchmarks.curves import lower_at_all, read_at, stepwise
from benchmarks.training_report import read_progress

#: Released model's steps whose SSIM the dominance test compares at.
DOMINANCE_STEPS = (2, 5, 10)
RELEASED = "rlministyler"


@dataclass(frozen=True)
class Setting:
    """One training configuration: a ``python -m agents.train_sac`` command without seed and folders."""

    description: str  #: what it changes, for the table
    image_size: int  #: training image side in px
    updates: int  #: gradient updates (env steps = updates + learning_starts)
    learning_starts: int  #: env steps collected before the first update
    init: str | None = None  #: released weights to start from (``None``: from scratch)
    hyperparams: tuple[str, ...] = ()  #: ``--hyperparams`` overrides of ``agents/training/hyperparams/style_sac.yml``

    def command(self, seed: int, folder: Path, data: Path) -> list[str]:
        """The training command of one seed.

        :param seed: the run's seed.
        :param folder: the run's log folder (``-f``).
        :param data: the corpus split (:mod:`benchmarks.corpus`).
        """
        return [
            sys.executable,
            "-m",
            "agents.train_sac",
            "--image-size",
            str(self.image_size),
            "-n",
            str(self.updates + self.learning_starts),
            "--seed",
            str(seed),
            "--content-dir",
            str(data / "train" / "photos"),
            "--style-dir",
            str(data / "train" / "art"),
            "-f",
            str(folder),
            "--save-freq",
            "100",
            "--eval-freq",
            "0",
            "--no-progress",
            "-v",
            "0",
            *(["--init", self.init] if self.init else []),
            "--hyperparams",
            f"learning_starts:{self.learning_starts}",
            *self.hyperparams,
        ]


#: The compared settings. The SAC temperature row reproduces the temperature of the earlier defaults (SAC's
#: initial 1, target -1 per element, lr 2e-4); every other row uses today's defaults plus its change. Rows of
#: options that were removed after a negative result (losses on the env's image, loss weights at their own rate)
#: are in ``benchmarks/results/training_dynamics_finetune.md``, with the commit that ran them.
SETTINGS: dict[str, Setting] = {
    "finetune_sac_temperature": Setting(
        "fine-tune, SAC temperature (alpha from 1, target -1/element, lr 2e-4), raw-output losses",
        128,
        300,
        60,
        RELEASED,
        ("ent_coef:auto", "target_entropy:-1.0", "ent_coef_lr:2.0e-4"),
    ),
    "finetune_default": Setting("fine-tune, defaults", 128, 300, 60, RELEASED),
    "finetune_critic_style": Setting(
        "fine-tune, defaults + critics see the style", 128, 300, 60, RELEASED, ("policy_kwargs.critic_style:true",)
    ),
    "scratch_papers_builder": Setting(
        "from scratch, the papers' builder",
        64,
        1500,
        100,
        None,
        ("policy_kwargs.residual_builder:false", "policy_kwargs.initial_log_scale:null"),
    ),
    "scratch_residual_builder": Setting(
        "from scratch, residual builder (defaults)", 64, 1500, 100, None, ("policy_kwargs.residual_builder:true",)
    ),
}


def run_folder(runs: Path, name: str, seed: int) -> Path:
    """The log folder of one setting and seed."""
    return runs / f"{name}_seed{seed}"


def trained_model(folder: Path, at_step: int | None = None) -> Path | None:
    """The finished ``model.zip`` in a log folder, or its checkpoint at env step ``at_step``, if any.

    :param folder: a run's log folder.
    :param at_step: take ``checkpoints/rl_model_<at_step>_steps.zip`` (a smaller budget of the same run).
    """
    pattern = "*/model.zip" if at_step is None else f"*/checkpoints/rl_model_{at_step}_steps.zip"
    models = sorted(folder.glob(pattern))
    return models[-1] if models else None


def train(name: str, seed: int, runs: Path, data: Path, threads: int) -> Path:
    """Train (or resume) one setting and seed with ``agents.train_sac`` in a subprocess; return its model.

    :param name: a key of :data:`SETTINGS`.
    :param seed: the run's seed.
    :param runs: parent of the runs' log folders.
    :param data: the corpus split.
    :param threads: torch CPU threads of the subprocess.
    :raises RuntimeError: when the training command fails (its log is named).
    """
    folder = run_folder(runs, name, seed)
    model = trained_model(folder)
    if model is not None:
        return model
    started = sorted(folder.glob("*/checkpoints"))
    command = SETTINGS[name].command(seed, folder, data)
    if started:
        command = [*command[:3], "--resume", str(started[-1].parent), "--no-progress", "-v", "0"]
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(folder / "train.log", "a") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode != 0:
            raise RuntimeError(f"{name} seed {seed} failed: see {folder / 'train.log'}")
    model = trained_model(folder)
    assert model is not None
    return model


def dominance(run: dict[int, dict[str, float]], released: dict[int, dict[str, float]]) -> dict[str, Any]:
    """The run's step-wise property (SSIM at step 1; style falling and content rising from step 1 to 5), its
    style ratio at the released model's SSIM of :data:`DOMINANCE_STEPS`, and whether it is lower at all of them."""
    out: dict[str, Any] = {
        "ssim_step1": run[1]["ssim"],
        "style_falls_1_to_5": run[5]["style_ratio"] < run[1]["style_ratio"],
        "content_rises_1_to_5": run[5]["content_loss"] > run[1]["content_loss"],
    }
    values = read_at(run, released, "ssim", list(DOMINANCE_STEPS))
    for step, style in zip(DOMINANCE_STEPS, values, strict=True):
        out[f"style_at_released_ssim_step{step}"] = style
    out["dominates_released"] = lower_at_all(values, released, list(DOMINANCE_STEPS))
    return out


CURVES = (
    ("rollout/ep_rew_mean", "episode return"),
    ("train/q_value", "Q"),
    ("train/ent_coef", "temperature"),
    ("train/entropy", "entropy / element"),
    ("train/style_loss", "generative style loss"),
    ("train/content_loss", "generative content loss"),
    ("train/contrastive_loss", "contrastive loss"),
    ("train/critic_loss", "critic loss"),
)


def plot_curves(runs: dict[str, Path], path: Path) -> None:
    """Training curves of every run, one panel per logged quantity (:data:`CURVES`).

    :param runs: label -> the run folder holding ``logs/``.
    :param path: the PNG to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for label, run_dir in runs.items():
        progress = read_progress(run_dir)
        for ax, (key, title) in zip(axes.flat, CURVES):
            if key in progress:
                data = progress[["time/total_timesteps", key]].dropna()
                ax.plot(data["time/total_timesteps"], data[key], label=label, linewidth=1)
            ax.set_title(title, fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("env steps", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    save_figure(fig, path, dpi=110)


def plot_tradeoff(curves: dict[str, dict[int, dict[str, float]]], path: Path, size: int) -> None:
    """Style loss (relative to the photo's) against SSIM, one curve per setting, steps labelled."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    for label, steps in curves.items():
        ordered = [steps[k] for k in sorted(steps)]
        style = "k--o" if label == RELEASED else "o-"
        ax.plot([v["ssim"] for v in ordered], [v["style_ratio"] for v in ordered], style, label=label, markersize=4)
        for k in (1, 5, 10):
            if k in steps:
                ax.annotate(
                    str(k),
                    (steps[k]["ssim"], steps[k]["style_ratio"]),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                )
    ax.set_xlabel("SSIM against the photo  (-> keeps the photo)")
    ax.set_ylabel("style loss / the photo's own  (<- more style)")
    ax.set_title(f"Held-out pairs at {size} px, steps 1..10 (labels: step); lower-right is better", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(
        __doc__, device="cpu", device_help="evaluation device", threads_help="torch threads of the evaluation"
    )
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--train", action="store_true", help="train (or resume) the runs that have no model yet")
    p.add_argument("--workers", type=int, default=1, help="training runs at once")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads of each training run")
    p.add_argument("--data", type=Path, default=Path("data/corpus_split"), help="the corpus split (benchmarks.corpus)")
    p.add_argument("--runs", type=Path, default=Path("runs/dynamics"), help="parent of the run folders")
    p.add_argument("--pairs", type=int, default=24, help="held-out content/style pairs")
    p.add_argument("--pair-seed", type=int, default=0, help="seed of the pair draw")
    p.add_argument("--size", type=int, default=256, help="evaluation size (content and style resized to it)")
    p.add_argument(
        "--steps",
        type=int_range(max(DOMINANCE_STEPS)),
        default=10,
        help=f"stylisation steps (at least {max(DOMINANCE_STEPS)}, the dominance test's last)",
    )
    p.add_argument("--name", default="training_dynamics", help="stem of the output files")
    p.add_argument(
        "--at-step",
        type=int_range(1),
        default=None,
        help="evaluate each run's checkpoint at this env step instead of its final model",
    )
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Train what is missing (``--train``), evaluate every run and the released model, write the report."""
    args = parse_args(argv)
    machine = machine_info(args.device)  # before training and evaluation: its load average is the start's
    jobs = [(name, seed) for name in args.settings for seed in args.seeds]
    if args.train:
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            list(pool.map(lambda job: train(*job, args.runs, args.data, args.train_threads), jobs))
    models = {
        f"{name}_seed{seed}": trained_model(run_folder(args.runs, name, seed), args.at_step) for name, seed in jobs
    }
    missing = [label for label, model in models.items() if model is None]
    if missing:
        what = "trained model" if args.at_step is None else f"checkpoint at step {args.at_step}"
        raise SystemExit(f"No {what} for {', '.join(missing)}: run with --train.")
    configure_torch(args.threads)
    links = args.runs / "models"  # benchmarks.quality labels a model by its file name
    links.mkdir(parents=True, exist_ok=True)
    for label, model in models.items():
        (links / f"{label}.zip").unlink(missing_ok=True)
        (links / f"{label}.zip").symlink_to(Path(model).resolve())  # type: ignore[arg-type]
    quality_name = f"{args.name}_quality_{args.size}px"
    quality.main(
        [
            "--content-dir",
            str(args.data / "eval" / "photos"),
            "--style-dir",
            str(args.data / "eval" / "art"),
            "--pairs",
            str(args.pairs),
            "--seed",
            str(args.pair_seed),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
            "--model",
            RELEASED,
            *(str(links / f"{label}.zip") for label in models),
            "--strengths",
            "--gatys-iterations",
            "--grid-steps",
            "1",
            "5",
            "10",
            "--device",
            args.device,
            "--out",
            str(args.out),
            "--name",
            quality_name,
        ]
    )
    curves = stepwise(args.out / f"{quality_name}_pairs.csv")
    released = curves[RELEASED]

    rows: list[dict[str, Any]] = []
    runs_table: list[dict[str, Any]] = []
    for label in models:
        name, seed = label.rsplit("_seed", 1)
        runs_table.append({"setting": name, "seed": int(seed), **dominance(curves[label], released)})
    by_setting: dict[str, dict[int, dict[str, float]]] = {RELEASED: released}
    for name in [RELEASED, *args.settings]:
        labels = [RELEASED] if name == RELEASED else [f"{name}_seed{s}" for s in args.seeds]
        for step in sorted(released):
            row: dict[str, Any] = {"setting": name, "seeds": len(labels) if name != RELEASED else "-", "step": step}
            for key in ("style_ratio", "content_loss", "ssim"):
                values = np.array([curves[label][step][key] for label in labels])
                row[key] = float(values.mean())
                row[f"{key}_spread"] = float(values.max() - values.min())
            rows.append(row)
            by_setting.setdefault(name, {})[step] = row
    plot_tradeoff(by_setting, args.out / f"{args.name}_tradeoff.png", args.size)
    plot_curves(
        {label: Path(model).parents[0 if args.at_step is None else 1] for label, model in models.items()},  # type: ignore[arg-type]
        args.out / f"{args.name}_curves.png",
    )
    Report(
        name=args.name,
        title=f"Training settings side by side: held-out pairs at {args.size} px, steps 1..{args.steps}",
        columns=[
            "setting",
            "seeds",
            "step",
            "style_ratio",
            "style_ratio_spread",
            "content_loss",
            "ssim",
            "ssim_spread",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                f"{args.pairs} content/style pairs drawn (seed {args.pair_seed}) from the evaluation split of "
                f"`{args.data}` (`python -m benchmarks.corpus`), which no run trained on. `style_ratio`: the "
                "MicroAST style loss of the output over the unchanged photo's, per pair, averaged; `content_loss` "
                "and `ssim` against the photo (`benchmarks.metrics`). Means over seeds; `_spread`: max - min over "
                "seeds. Every pair's scores: "
                f"`{quality_name}_pairs.csv`."
            ),
            "Settings (each a `python -m agents.train_sac` run on the training split; commands in each run's "
            "`train.log`):\n\n"
            + "\n".join(
                f"- `{name}`: {SETTINGS[name].description}; {SETTINGS[name].updates} updates at "
                f"{SETTINGS[name].image_size} px; `{' '.join(SETTINGS[name].command(0, Path('RUN'), args.data)[1:])}`"
                for name in args.settings
            ),
            *(
                [
                    f"Evaluated at env step {args.at_step} of each run (its checkpoint: {args.at_step} minus the "
                    "setting's learning_starts updates), not at the end of the budget above."
                ]
                if args.at_step
                else []
            ),
        ],
        extra_tables=[
            (
                "Against the released model, per run: style ratio at the released model's SSIM of its steps "
                + ", ".join(map(str, DOMINANCE_STEPS))
                + " (released: "
                + ", ".join(
                    f"{released[s]['style_ratio']:.3f} at SSIM {released[s]['ssim']:.3f}" for s in DOMINANCE_STEPS
                )
                + "); empty where the run's curve does not reach that SSIM",
                runs_table,
                [
                    "setting",
                    "seed",
                    "ssim_step1",
                    "style_falls_1_to_5",
                    "content_rises_1_to_5",
                    *(f"style_at_released_ssim_step{s}" for s in DOMINANCE_STEPS),
                    "dominates_released",
                ],
            )
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
