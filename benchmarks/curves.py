"""Step-wise curves compared: which method gives more style at the same content kept, and does every step count.

    python -m benchmarks.curves benchmarks/results/style_size_512px_pairs.csv \
        --reference "rlministyler_ft128 (style own size)" --name style_size_512px_curves

From a :mod:`benchmarks.quality` ``*_pairs.csv``, a pair's style ratio is its style loss over the photo's own. A
method *dominates* the reference on SSIM (or content loss) when its mean curve, read at the reference's points
of ``--steps``, has a lower style ratio at all of them (:func:`compare`). Its step-wise shares
(:func:`step_shares`): the share of pairs whose style ratio at step k is below their step 1's, and the share
whose ratio never rises from one step to the next. It is *better* when it dominates and both shares (k: the
last of ``--share-steps``) are at least the reference's. Writes ``NAME.{md,csv,json}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import cli_main, int_range
from benchmarks.common import Report, Row, benchmark_parser, machine_info, settings_of
from benchmarks.quality import CONTENT_PHOTO

#: The measures of content kept a curve is read at.
MEASURES = ("ssim", "content_loss")
#: The steps k whose style ratio is compared with step 1's, per pair (``--share-steps``' default).
SHARE_STEPS = (2, 5, 10)
#: How much a pair's style ratio may rise from one step to the next and still count as non-increasing.
TOLERANCE = 0.0

#: Per method, per step: the means over pairs of ``style_ratio``, ``style_loss``, ``content_loss`` and ``ssim``.
Curves = dict[str, dict[int, dict[str, float]]]
#: Per method, per pair, per step: that pair's ``style_ratio``, ``style_loss``, ``content_loss`` and ``ssim``.
PerPair = dict[str, dict[str, dict[int, dict[str, float]]]]


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


def per_pair(pairs_csvs: Sequence[Path]) -> PerPair:
    """Per method, pair and step, the style loss relative to the photo's, the style loss, the content loss and
    SSIM, from :mod:`benchmarks.quality`'s ``*_pairs.csv`` files (the photo's own rows left out). Several files
    (e.g. new models scored in a later run on the same pairs) are read as one.

    :param pairs_csvs: the files (columns ``pair``, ``method``, ``knob``, ``style_loss``, ``content_loss``, ``ssim``).
    :raises ValueError: the files score the same photo differently (another size or judge), or the methods were
        scored on different pairs.
    """
    rows = []
    for path in pairs_csvs:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    photo_style: dict[str, float] = {}
    for r in rows:
        if r["method"] == CONTENT_PHOTO:
            known = photo_style.setdefault(r["pair"], float(r["style_loss"]))
            if not np.isclose(known, float(r["style_loss"]), rtol=1e-3):  # float noise: ~1e-4 seen
                raise ValueError(f"the files score the photo of {r['pair']} differently: another size or judge?")
    grouped: PerPair = {}
    for r in rows:
        if r["method"] == CONTENT_PHOTO:
            continue
        grouped.setdefault(r["method"], {}).setdefault(r["pair"], {})[int(float(r["knob"]))] = {
            "style_ratio": float(r["style_loss"]) / photo_style[r["pair"]],
            "style_loss": float(r["style_loss"]),
            "content_loss": float(r["content_loss"]),
            "ssim": float(r["ssim"]),
        }
    pair_sets = {method: sorted(pairs) for method, pairs in grouped.items()}
    if len({tuple(v) for v in pair_sets.values()}) > 1:
        counts = {method: len(pairs) for method, pairs in pair_sets.items()}
        raise ValueError(f"the methods were scored on different pairs ({counts} pairs per method)")
    return grouped


def mean_curves(data: PerPair) -> Curves:
    """Per method and step, the means over pairs of :func:`per_pair`'s values (steps in increasing order)."""
    curves: Curves = {}
    for method, pairs in data.items():
        steps = sorted({step for values in pairs.values() for step in values})
        curves[method] = {}
        for step in steps:
            values = [v[step] for v in pairs.values() if step in v]
            curves[method][step] = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
    return curves


def stepwise(pairs_csv: Path) -> Curves:
    """Per method and step, the means over pairs of the style loss relative to the photo's, the style loss, the
    content loss and SSIM, from :mod:`benchmarks.quality`'s ``*_pairs.csv``.

    :param pairs_csv: the file (columns ``pair``, ``method``, ``knob``, ``style_loss``, ``content_loss``, ``ssim``).
    """
    return mean_curves(per_pair([pairs_csv]))


def non_increasing(ratios: list[float], tolerance: float = TOLERANCE) -> bool:
    """Whether a sequence never rises by more than ``tolerance`` from one entry to the next.

    :param ratios: one pair's style ratios at its steps, in step order.
    :param tolerance: the rise allowed between consecutive steps (0: each at most the one before).
    """
    return all(b <= a + tolerance for a, b in zip(ratios, ratios[1:]))


def step_shares(
    data: PerPair, share_steps: list[int] | tuple[int, ...] = SHARE_STEPS, tolerance: float = TOLERANCE
) -> list[Row]:
    """One row per method: its pairs, the share of pairs whose style ratio at each of ``share_steps`` is below
    their step 1's (``share_below_step1_at_K``; ``None`` when no pair has both steps), the share whose style
    ratio is non-increasing over all their steps (``share_non_increasing``), and per step the median and mean
    style ratio over pairs and the median SSIM (``median_style_stepK``, ``mean_style_stepK``,
    ``median_ssim_stepK``).

    :param data: :func:`per_pair`'s output.
    :param share_steps: the steps compared with step 1.
    :param tolerance: see :func:`non_increasing`.
    """
    rows: list[Row] = []
    for method, pairs in data.items():
        row: Row = {"method": method, "pairs": len(pairs)}
        for k in share_steps:
            below = [v[k]["style_ratio"] < v[1]["style_ratio"] for v in pairs.values() if 1 in v and k in v]
            row[f"share_below_step1_at_{k}"] = float(np.mean(below)) if below else None
        row["share_non_increasing"] = float(
            np.mean([non_increasing([v[s]["style_ratio"] for s in sorted(v)], tolerance) for v in pairs.values()])
        )
        steps = sorted({step for values in pairs.values() for step in values})
        for key, name, statistic in (
            ("style_ratio", "median_style", np.median),
            ("style_ratio", "mean_style", np.mean),
            ("ssim", "median_ssim", np.median),
        ):
            for step in steps:
                row[f"{name}_step{step}"] = float(statistic([v[step][key] for v in pairs.values() if step in v]))
        rows.append(row)
    return rows


def share_columns(rows: list[Row], share_steps: list[int] | tuple[int, ...]) -> list[str]:
    """The columns of :func:`step_shares`' table, in order (every step any method has)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    curves = [k for k in keys if k.startswith(("median_style_step", "mean_style_step", "median_ssim_step"))]
    return ["method", "pairs", *[f"share_below_step1_at_{k}" for k in share_steps], "share_non_increasing", *curves]


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


def shares_at_least(method: Row, reference: Row, share_step: int | None) -> bool:
    """Whether a method's step-wise shares (:func:`step_shares` rows) are at least the reference's: the share
    below step 1 at ``share_step`` and the non-increasing share (a missing share counts as not at least).

    :param method: the method's row.
    :param reference: the reference's row.
    :param share_step: the step whose share below step 1 is compared (``None``: only the non-increasing share).
    """
    if method["share_non_increasing"] < reference["share_non_increasing"]:
        return False
    if share_step is None:
        return True
    key = f"share_below_step1_at_{share_step}"
    return method.get(key) is not None and reference.get(key) is not None and method[key] >= reference[key]


def compare(
    curves: Curves,
    reference: str,
    steps: list[int],
    shares: list[Row] | None = None,
    share_step: int | None = SHARE_STEPS[-1],
) -> list[Row]:
    """One row per method and measure: its style ratio at the reference's points, whether it is lower at all
    (``dominates``) and, given ``shares``, whether it is ``better``: it dominates and its step-wise shares are at
    least the reference's (:func:`shares_at_least`).

    :param curves: :func:`stepwise`'s output.
    :param reference: the method compared with.
    :param steps: the reference's steps whose SSIM and content loss the curves are read at.
    :param shares: :func:`step_shares`' rows (``None``: no ``better`` column).
    :param share_step: the step whose share below step 1 ``better`` compares (``None``: none).
    """
    by_method = {row["method"]: row for row in shares or []}
    rows: list[Row] = []
    for method, curve in curves.items():
        for measure in MEASURES:
            values = read_at(curve, curves[reference], measure, steps)
            row: dict[str, Any] = {"method": method, "at_reference": measure}
            row.update({f"style_at_step{s}": v for s, v in zip(steps, values, strict=True)})
            row["dominates"] = "-" if method == reference else lower_at_all(values, curves[reference], steps)
            if shares is not None:
                row["better"] = (
                    "-"
                    if method == reference
                    else row["dominates"] and shares_at_least(by_method[method], by_method[reference], share_step)
                )
            rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, device=None, threads_help=None)
    p.add_argument("pairs_csv", type=Path, nargs="+", help="benchmarks.quality *_pairs.csv files of the same pairs")
    p.add_argument("--reference", required=True, help="the method the others are compared with (its label)")
    p.add_argument("--steps", type=int_range(1), nargs="+", default=[2, 5, 10], help="the reference's steps")
    p.add_argument(
        "--share-steps",
        type=int_range(2),
        nargs="+",
        default=None,
        help="steps k whose style ratio is compared with step 1's, per pair (the last one counts for `better`); "
        f"default: those of {list(SHARE_STEPS)} the reference has",
    )
    p.add_argument("--name", default="curves", help="stem of the output files")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Compare every method's curve and step-wise shares with the reference's; write and return the table."""
    args = parse_args(argv)
    for path in args.pairs_csv:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (a benchmarks.quality *_pairs.csv was expected)")
    data = per_pair(args.pairs_csv)
    curves = mean_curves(data)
    if args.reference not in curves:
        raise ValueError(f"--reference {args.reference!r} is not a method of the files: {sorted(curves)}")
    missing = [s for s in args.steps if s not in curves[args.reference]]
    if missing:
        raise ValueError(f"--steps {missing}: the reference has steps {sorted(curves[args.reference])}")
    if args.share_steps is None:
        args.share_steps = [s for s in SHARE_STEPS if s in curves[args.reference]]
    missing = [s for s in args.share_steps if s not in curves[args.reference]]
    if missing:
        raise ValueError(f"--share-steps {missing}: the reference has steps {sorted(curves[args.reference])}")
    share_step = args.share_steps[-1] if args.share_steps else None
    shares = step_shares(data, args.share_steps)
    rows = compare(curves, args.reference, args.steps, shares, share_step)
    Report(
        name=args.name,
        title=f"Style at the same content kept, against {args.reference}",
        columns=["method", "at_reference", *[f"style_at_step{s}" for s in args.steps], "dominates", "better"],
        rows=rows,
        settings=settings_of(args),
        machine=machine_info(),
        notes=[
            f"Style loss over the photo's own (mean over pairs) of each method's curve, read at the SSIM "
            f"(`at_reference` ssim) or content loss of the reference's steps {args.steps}, linearly between the "
            f"method's steps; `-`: outside its curve. `dominates`: lower than the reference's at all of them. "
            f"`better`: dominates, and its share of pairs non-increasing over all steps"
            + (f" and its share of pairs below step 1 at step {share_step}" if share_step else "")
            + " (second table) are at least the reference's. "
            f"From {', '.join(f'`{path.name}`' for path in args.pairs_csv)}.",
            f"Step-wise shares, per method: `share_below_step1_at_K`: share of pairs whose style ratio (style "
            f"loss over the photo's own) at step K is below their step 1's; `share_non_increasing`: share of "
            f"pairs whose style ratio at each step is at most the step before's (tolerance {TOLERANCE:g}) over "
            f"all steps; `median_style_stepK`, `mean_style_stepK`: median and mean style ratio over pairs; "
            f"`median_ssim_stepK`: median SSIM. These are quality numbers, not timings.",
        ],
        extra_tables=[("Step-wise shares", shares, share_columns(shares, args.share_steps))],
    ).write(args.out)
    for row in rows:
        print(row)
    for row in shares:
        print(row)
    return rows


if __name__ == "__main__":
    main()
