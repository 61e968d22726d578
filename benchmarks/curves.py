"""Step-wise curves compared: which method gives more style at the same content kept.

    python -m benchmarks.curves benchmarks/results/style_size_512px_pairs.csv \
        --reference "rlministyler_ft128 (style own size)" --name style_size_512px_curves

The package's verdict between two step-wise models: one is better when its curve of style loss against SSIM
(or content loss) over steps 1..10 lies below the other's. From a :mod:`benchmarks.quality` ``*_pairs.csv``
(every pair, method and step), each method's curve is the mean over pairs, per step, of the style loss relative
to the photo's own (per pair, then averaged; :func:`stepwise`), of the content loss and of SSIM. Each method's
curve is read (linearly between its steps, :func:`interpolate_style`) at the ``--reference`` method's SSIM and
content loss of ``--steps`` (default 2, 5, 10); it *dominates* the reference on a measure when it is lower at
every one of them. A point outside a curve's range (e.g. a method whose 10 steps keep more SSIM than the
reference's step 10) is left empty: no claim. Writes ``NAME.{md,csv,json}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import cli_main, int_range
from benchmarks.common import Report, Row, benchmark_parser, machine_info, settings_of
from benchmarks.quality import CONTENT_PHOTO

#: The measures of content kept a curve is read at.
MEASURES = ("ssim", "content_loss")

#: Per method, per step: the means over pairs of ``style_ratio``, ``style_loss``, ``content_loss`` and ``ssim``.
Curves = dict[str, dict[int, dict[str, float]]]


def interpolate_style(points: list[tuple[float, float]], at: float) -> float | None:
    """A curve's style at ``at`` on its other axis (linear between steps), ``None`` outside its range.

    :param points: ``(ssim or content loss, style)`` of steps 1..k.
    :param at: where to read the curve.
    """
    ordered = sorted(points)
    xs = [p[0] for p in ordered]
    if not xs[0] <= at <= xs[-1]:
        return None
    return float(np.interp(at, xs, [p[1] for p in ordered]))


def stepwise(pairs_csv: Path) -> Curves:
    """Per method and step, the means over pairs of the style loss relative to the photo's, the style loss, the
    content loss and SSIM, from :mod:`benchmarks.quality`'s ``*_pairs.csv``.

    :param pairs_csv: the file (columns ``pair``, ``method``, ``knob``, ``style_loss``, ``content_loss``, ``ssim``).
    """
    with open(pairs_csv) as f:
        rows = list(csv.DictReader(f))
    photo_style = {r["pair"]: float(r["style_loss"]) for r in rows if r["method"] == CONTENT_PHOTO}
    grouped: dict[str, dict[int, list[dict[str, float]]]] = {}
    for r in rows:
        if r["method"] == CONTENT_PHOTO:
            continue
        grouped.setdefault(r["method"], {}).setdefault(int(float(r["knob"])), []).append(
            {
                "style_ratio": float(r["style_loss"]) / photo_style[r["pair"]],
                "style_loss": float(r["style_loss"]),
                "content_loss": float(r["content_loss"]),
                "ssim": float(r["ssim"]),
            }
        )
    return {
        method: {step: {k: float(np.mean([v[k] for v in values])) for k in values[0]} for step, values in steps.items()}
        for method, steps in grouped.items()
    }


def read_at(
    curve: dict[int, dict[str, float]], reference: dict[int, dict[str, float]], measure: str, steps: list[int]
) -> list[float | None]:
    """``curve``'s style ratio at ``reference``'s ``measure`` (``ssim`` or ``content_loss``) of each of ``steps``.

    :param curve: one method's curve (:data:`Curves` entry).
    :param reference: the reference method's curve.
    :param measure: the content measure the curves are read at.
    :param steps: the reference's steps.
    """
    points = [(v[measure], v["style_ratio"]) for v in curve.values()]
    return [interpolate_style(points, reference[step][measure]) for step in steps]


def lower_at_all(values: list[float | None], reference: dict[int, dict[str, float]], steps: list[int]) -> bool:
    """Whether a curve read at the reference's ``steps`` (:func:`read_at`) has less style than the reference at
    every one of them (a point outside the curve counts as not lower).

    :param values: the curve's style ratios at the reference's points, one per step.
    :param reference: the reference method's curve.
    :param steps: the reference's steps.
    """
    return all(v is not None and v < reference[s]["style_ratio"] for s, v in zip(steps, values, strict=True))


def compare(curves: Curves, reference: str, steps: list[int]) -> list[Row]:
    """One row per method and measure: its style ratio at the reference's points, and whether it is lower at all.

    :param curves: :func:`stepwise`'s output.
    :param reference: the method compared with.
    :param steps: the reference's steps whose SSIM and content loss the curves are read at.
    """
    rows: list[Row] = []
    for method, curve in curves.items():
        for measure in MEASURES:
            values = read_at(curve, curves[reference], measure, steps)
            row: dict[str, Any] = {"method": method, "at_reference": measure}
            row.update({f"style_at_step{s}": v for s, v in zip(steps, values, strict=True)})
            row["dominates"] = "-" if method == reference else lower_at_all(values, curves[reference], steps)
            rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, device=None, threads_help=None)
    p.add_argument("pairs_csv", type=Path, help="a benchmarks.quality *_pairs.csv")
    p.add_argument("--reference", required=True, help="the method the others are compared with (its label)")
    p.add_argument("--steps", type=int_range(1), nargs="+", default=[2, 5, 10], help="the reference's steps")
    p.add_argument("--name", default="curves", help="stem of the output files")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Compare every method's curve with the reference's; write and return the table."""
    args = parse_args(argv)
    if not args.pairs_csv.is_file():
        raise FileNotFoundError(f"{args.pairs_csv}: no such file (a benchmarks.quality *_pairs.csv was expected)")
    curves = stepwise(args.pairs_csv)
    if args.reference not in curves:
        raise ValueError(f"--reference {args.reference!r} is not a method of {args.pairs_csv}: {sorted(curves)}")
    missing = [s for s in args.steps if s not in curves[args.reference]]
    if missing:
        raise ValueError(f"--steps {missing}: the reference has steps {sorted(curves[args.reference])}")
    rows = compare(curves, args.reference, args.steps)
    Report(
        name=args.name,
        title=f"Style at the same content kept, against {args.reference}",
        columns=["method", "at_reference", *[f"style_at_step{s}" for s in args.steps], "dominates"],
        rows=rows,
        settings=settings_of(args),
        machine=machine_info(),
        notes=[
            f"Style loss over the photo's own (mean over pairs) of each method's curve, read at the SSIM "
            f"(`at_reference` ssim) or content loss of the reference's steps {args.steps}, linearly between the "
            f"method's steps; `-`: outside its curve. `dominates`: lower than the reference's at all of them. "
            f"From `{args.pairs_csv.name}`."
        ],
    ).write(args.out)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
