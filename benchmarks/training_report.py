"""Learning curves of a ``train_sac`` run and the step-wise behaviour of its model on the evaluation pairs.

    python -m benchmarks.training_report RUN_DIR [--image-size 128] [--out benchmarks/results]

Writes ``<name>_curves.png`` (episode reward, critic loss, temperature, content and style loss against env
steps, from the run's ``monitor/`` and ``logs/progress.csv``) and ``<name>_stepwise.{md,csv,json,png}``:
for each built-in evaluation pair, the env's own ``info`` metrics (style loss against the style image,
content loss against the photo) at steps 1..10 of a deterministic episode, for the run's model beside the
authors' released weights and the unchanged photo (``photo``: the losses every episode starts from),
measured in the same run.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from agents.inference.pictures import EVAL_PAIRS
from benchmarks.common import Controller, benchmark_parser, policy_controller, save_figure, unchanged_photo
from nst_env.style_transfer import NSTEnv

CURVES = (
    ("rollout/ep_rew_mean", "episode reward"),
    ("train/critic_loss", "critic loss"),
    ("train/ent_coef", "temperature alpha"),
    ("train/content_loss", "content loss (generative)"),
    ("train/style_loss", "style loss (generative)"),
    ("train/q_value", "Q value"),
)


def read_progress(run_dir: Path) -> pd.DataFrame:
    """A run's logged metrics, every session's ``logs/progress*.csv`` (a resumed run adds one), by env step.

    :param run_dir: the run folder.
    :return: the metrics, empty when nothing was logged yet (SB3 logs every ``log_interval`` episodes).
    """
    logs = [f for f in (run_dir / "logs").glob("progress*.csv") if f.stat().st_size > 0]
    if not logs:
        return pd.DataFrame(columns=["time/total_timesteps"])
    return pd.concat([pd.read_csv(f) for f in logs]).sort_values("time/total_timesteps")


def plot_curves(run_dir: Path, path: Path) -> Path:
    """Six panels of the run's logged metrics against env steps."""
    progress = read_progress(run_dir)
    files = sorted((run_dir / "monitor").glob("*.monitor.csv"), key=lambda f: f.stat().st_mtime)
    monitor = pd.concat([pd.read_csv(f, skiprows=1) for f in files if len(f.read_text().splitlines()) > 2])
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, title) in zip(axes.flat, CURVES):
        if key == "rollout/ep_rew_mean":
            steps = monitor["l"].cumsum()
            ax.plot(steps, monitor["r"], alpha=0.3, lw=0.8, label="episode")
            ax.plot(steps, monitor["r"].rolling(20, min_periods=1).mean(), lw=1.5, label="mean of 20")
            ax.legend(fontsize=8)
        elif key in progress:
            data = progress[["time/total_timesteps", key]].dropna()
            ax.plot(data["time/total_timesteps"], data[key], lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps", fontsize=8)
    fig.suptitle(f"StyleSAC training: {run_dir.name}")
    save_figure(fig, path, dpi=110)
    return path


def stepwise_metrics(controller: Controller, env: NSTEnv, steps: int = 10) -> list[dict[str, float]]:
    """Env ``info`` metrics of a deterministic ``steps``-step episode for every evaluation pair."""
    rows = []
    for content, style in EVAL_PAIRS:
        obs, _ = env.reset(options={"content": content, "style": style})
        for _ in range(steps):
            obs, _, _, _, info = env.step(controller(obs))
            rows.append(
                {
                    "pair": f"{content}/{style}",
                    "step": info["step"],
                    "style_loss": info["style_loss"],
                    "content_loss": info["content_loss"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser(__doc__, device="cpu", device_help="cpu, cuda, ...", threads_help=None)
    p.add_argument("run_dir", type=Path, help="a train_sac run folder (with model.zip or checkpoints)")
    p.add_argument(
        "--model", default=None, help="model zip to evaluate (default: RUN_DIR/model.zip, else the newest checkpoint)"
    )
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.run_dir.name
    curves = plot_curves(args.run_dir, args.out / f"{name}_curves.png")

    model = args.model or (args.run_dir / "model.zip")
    if not Path(model).is_file():
        model = max(
            (args.run_dir / "checkpoints").glob("rl_model_*_steps.zip"), key=lambda f: int(f.stem.split("_")[2])
        )
    env = NSTEnv(image_size=args.image_size, device=args.device)
    rows = []
    controllers = {
        "ours": policy_controller(model, args.device),
        "released": policy_controller("rlministyler", args.device),
        "photo": unchanged_photo,
    }
    for label, controller in controllers.items():
        for row in stepwise_metrics(controller, env):
            rows.append({"model": label, **row})
    table = pd.DataFrame(rows)
    mean = table.groupby(["model", "step"])[["style_loss", "content_loss"]].mean().reset_index()
    pivot = mean.pivot(index="step", columns="model")
    pivot.columns = [f"{metric} ({model})" for metric, model in pivot.columns]
    print(pivot.round(3).to_string())

    stem = args.out / f"{name}_stepwise"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(
        f"Env metrics at {args.image_size} px, mean over {len(EVAL_PAIRS)} built-in evaluation pairs "
        f"(model: `{Path(str(model)).name}`).\n\n" + pivot.round(4).to_markdown() + "\n"
    )
    info = {
        "model": str(model),
        "image_size": args.image_size,
        "pairs": EVAL_PAIRS,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "mean_by_step": json.loads(mean.to_json(orient="records")),
    }
    stem.with_suffix(".json").write_text(json.dumps(info, indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, group in mean.groupby("model"):
        axes[0].plot(group["step"], group["style_loss"], "o-", label=label)
        axes[1].plot(group["step"], group["content_loss"], "o-", label=label)
    for ax, title in zip(axes, ("style loss vs style image", "content loss vs photo")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_xticks(np.arange(1, 11))
        ax.legend()
    save_figure(fig, stem.with_suffix(".png"), dpi=110)
    print(f"wrote {curves} and {stem}.{{md,csv,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
