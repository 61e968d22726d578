"""Temporal consistency of stylised video: the warping error (x 1e-2) of RL-NST's video model with and
without its frame-wise GRU state, at steps 1, 5 and 10, against per-frame image stylisation.

The evaluation protocol (docs/design.md): the optical flow of the *input* frames (OpenCV DIS, and Farneback as a check) warps
stylised frame ``t`` onto frame ``t+1``; the squared RGB difference is averaged over the pixels that the
forward-backward consistency check keeps (Lai et al., 2018; :mod:`agents.style_sac.temporal`). Rows:

- ``input video``: the frames themselves, the floor this flow allows;
- ``RL-NST video, frame-wise GRU``: a trained ``RLNSTVideoPolicy``, states carried as at inference;
- ``RL-NST video, no frame-wise GRU``: the same model with the frame-wise state reset every frame;
- ``RL-NST image, per frame``: the released single-style model the video model started from;
- ``RLMiniStyler, per frame``: the released 3D-latent arbitrary-style model, with the same style image.

    # train a video model first (our run: stopped at 258 steps after 17 minutes on a shared 2-core CPU),
    # then measure (about 10 minutes there at the defaults):
    python -m agents.train_sac --env NSTVideo-v0 --init rlnst:blue_swirls -n 400 --image-size 48 \\
        --eval-freq 0 --save-freq 100 -f runs/bench_video --hyperparams learning_starts:40
    python -m benchmarks.video_temporal --video-model runs/bench_video/style_sac_NSTVideo-v0_1/model.zip

Without ``--video-model`` it trains one first with the command above (``--train-steps``). Writes
``benchmarks/results/video_temporal.{md,csv,json}`` and ``video_temporal_heatmap.jpg`` (per row and step, the
mean over frame pairs of the per-pixel warping error).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from agents.cli import cli_main, int_range, train_sac
from agents.inference.models import load_policy
from agents.inference.runners import FrameStylizer
from agents.networks.pretrained import rlnst_style_image_path
from agents.style_sac import ActorBuilderPolicy, RLNSTVideoPolicy
from agents.style_sac.policies import VideoHiddenStates
from agents.style_sac.temporal import FLOW_METHODS, input_flows, warping_error_maps
from benchmarks.common import benchmark_parser, save_figure
from nst_env.images import load_image, resize
from nst_env.utils import resolve_device
from nst_env.video import DEFAULT_VIDEO, read_video

RESULTS = Path(__file__).parent / "results"
#: Released RL-NST model the video model starts from, and whose style every row uses.
STYLE_MODEL = "rlnst:blue_swirls"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(
        __doc__, threads_help="torch CPU threads (1 on a busy shared machine)", out=RESULTS, out_help="results folder"
    )
    p.add_argument("--video", default=str(DEFAULT_VIDEO), help="input video")
    p.add_argument("--video-model", default=None, help="trained RLNSTVideoPolicy zip (default: train one first)")
    p.add_argument("--train-steps", type=int_range(1), default=400, help="env steps when training the video model here")
    p.add_argument("--start", type=int_range(0), default=0, help="first (distinct) frame used")
    p.add_argument("--frames", type=int_range(2), default=24, help="consecutive distinct frames used")
    p.add_argument("--max-side", type=int_range(16), default=160, help="frames are downscaled to this longer side")
    p.add_argument("--steps", type=int_range(1, 1000), nargs="+", default=[1, 5, 10], help="stylisation steps reported")
    return p.parse_args(argv)


def train_video_model(steps: int, folder: Path) -> Path:
    """Train an RLNSTVideoPolicy from the released image model with ``agents.train_sac`` (see the docstring).

    :param steps: env steps.
    :param folder: log folder of the run.
    :return: the saved model.
    """
    code = train_sac.main(
        [
            "--env",
            "NSTVideo-v0",
            "--init",
            STYLE_MODEL,
            "-n",
            str(steps),
            "--image-size",
            "48",
            "--eval-freq",
            "0",
            "--save-freq",
            "0",
            "--no-progress",
            "-v",
            "0",
            "-f",
            str(folder),
            "--hyperparams",
            "learning_starts:40",
        ]
    )
    if code != 0:
        raise SystemExit(f"training the video model failed (exit code {code})")
    return folder / "style_sac_NSTVideo-v0_1" / "model.zip"


def stylize_frames(
    policy: ActorBuilderPolicy, frames: Sequence[np.ndarray], style: np.ndarray | None, steps: Sequence[int]
) -> tuple[dict[int, list[np.ndarray]], float]:
    """Every frame stylised at ``steps`` (one pass of ``max(steps)`` steps per frame).

    :param policy: the policy (a recurrent one carries its states through :class:`FrameStylizer`).
    :param frames: input frames, ``H x W x 3`` uint8.
    :param style: the style image for an arbitrary-style policy.
    :param steps: the steps to keep.
    :return: ``{step: stylised frames}`` and the seconds per frame (all steps).
    """
    stylizer = FrameStylizer(policy, style, steps)
    outputs: dict[int, list[np.ndarray]] = {step: [] for step in stylizer.steps}
    start = time.perf_counter()
    for frame in frames:
        for step, image in stylizer(frame).items():
            outputs[step].append(image)
    return outputs, (time.perf_counter() - start) / len(frames)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table of a data frame (no extra dependency)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    video_model = (
        Path(args.video_model)
        if args.video_model
        else train_video_model(args.train_steps, Path(tempfile.mkdtemp(prefix="video_temporal_")))
    )

    frames = read_video(args.video)[args.start : args.start + args.frames]
    height, width = frames.shape[1:3]
    scale = min(1.0, args.max_side / max(height, width))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    frames = [resize(frame, *size) for frame in frames]
    print(f"{len(frames)} frames of {args.video} at {size[0]}x{size[1]}; model {video_model}")
    flows = {method: input_flows(frames, method) for method in FLOW_METHODS}

    video_policy = load_policy(video_model, device)
    if not isinstance(video_policy, RLNSTVideoPolicy):
        raise SystemExit(f"{video_model} is not an RLNSTVideoPolicy model.")
    style_path = rlnst_style_image_path(STYLE_MODEL.split(":")[1])
    assert style_path is not None
    style = load_image(style_path, max_side=256)

    def carried(policy: RLNSTVideoPolicy, carry: bool) -> RLNSTVideoPolicy:
        policy.rollout_hidden = VideoHiddenStates(carry_frames=carry)
        return policy

    methods = {
        "RL-NST video, frame-wise GRU": lambda: (carried(video_policy, True), None),
        "RL-NST video, no frame-wise GRU": lambda: (carried(video_policy, False), None),
        "RL-NST image, per frame": lambda: (load_policy(STYLE_MODEL, device), None),
        "RLMiniStyler (3D latent), per frame": lambda: (load_policy("rlministyler", device), style),
    }
    results = {"input video": ({step: frames for step in args.steps}, 0.0)}
    for name, make in methods.items():
        policy, method_style = make()
        results[name] = stylize_frames(policy, frames, method_style, args.steps)
        print(f"{name}: {results[name][1]:.3f} s/frame")

    rows, heatmaps = [], {}
    for name, (outputs, seconds) in results.items():
        for step in args.steps:
            row = {"method": name, "step": step}
            for method in FLOW_METHODS:
                maps = warping_error_maps(outputs[step], flows[method])
                errors = [m.sum() / max(int(f.visible.sum()), 1) for m, f in zip(maps, flows[method])]
                row[f"warping error x1e-2 ({method})"] = 100.0 * float(np.mean(errors))
                if method == "dis":
                    heatmaps[name, step] = np.mean(maps, axis=0)
            row["s/frame (all steps)"] = seconds
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "video_temporal.csv", index=False)
    meta = {
        "video": Path(args.video).name,
        "frames": len(frames),
        "first_frame": args.start,
        "size": list(size),
        "steps": args.steps,
        "video_model": str(video_model),
        "style": f"{style_path.parent.name}/{style_path.name}",
        "device": str(device),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "video_temporal.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [
        "# Temporal warping error of stylised video",
        "",
        f"`python -m benchmarks.video_temporal` on {len(frames)} consecutive distinct frames of `{meta['video']}` "
        f"(from frame {args.start}) at {size[0]}x{size[1]}, style `{meta['style']}` (every row), "
        f"{device}, torch {torch.__version__}, {meta['date']}. Video model: `{video_model}`.",
        "",
        "Warping error: mean over non-occluded pixels (forward-backward check) of the squared RGB difference "
        "(values in [0, 1]) between stylised frame t+1 and stylised frame t warped by the input's optical flow, "
        "averaged over frame pairs, x100. Lower is more consistent; `input video` is the floor. Heat maps (DIS): "
        "`video_temporal_heatmap.jpg`. `s/frame`: wall-clock seconds per frame for all steps (compare rows of "
        "one run only; other jobs may share the machine).",
        "",
        markdown_table(table),
        "",
    ]
    (out / "video_temporal.md").write_text("\n".join(md))

    names = list(results)
    fig = Figure(figsize=(2.6 * len(args.steps) + 1.2, 2.2 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), len(args.steps), squeeze=False)
    vmax = max(float(np.percentile(h, 99)) for h in heatmaps.values()) or 1.0
    for r, name in enumerate(names):
        for c, step in enumerate(args.steps):
            image = axes[r, c].imshow(heatmaps[name, step], cmap="magma", vmin=0.0, vmax=vmax)
            axes[r, c].set_title(f"{name}\nstep {step}", fontsize=7)
            axes[r, c].axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="squared RGB warping difference")
    save_figure(fig, out / "video_temporal_heatmap.jpg", dpi=110)
    print(markdown_table(table))
    print(f"Wrote {out / 'video_temporal.md'}, .csv, .json and video_temporal_heatmap.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
