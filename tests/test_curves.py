"""``benchmarks.curves``: the package's verdict between step-wise methods, read from a quality pairs CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import curves


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """``rows`` as a quality ``*_pairs.csv``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def photo_row(pair: str, photo_style: float) -> dict[str, object]:
    """The unchanged photo's row of a pair (its style loss normalises the pair's)."""
    return {
        "pair": pair,
        "method": curves.CONTENT_PHOTO,
        "knob": 0,
        "style_loss": photo_style,
        "content_loss": 0,
        "ssim": 1,
    }


def write_pairs(path: Path) -> None:
    """Two pairs; ``base`` loses style step by step, ``better`` has 0.1 less style at every SSIM, ``gentle``
    keeps more SSIM than ``base``'s last step, ``worse`` has more style."""
    rows = []
    for pair, photo_style in (("a", 2.0), ("b", 4.0)):
        rows.append(photo_row(pair, photo_style))
        for step in range(1, 4):
            ssim, ratio = 0.9 - 0.2 * step, 0.8 - 0.1 * step
            for method, shift, ssim_shift in (
                ("base", 0, 0),
                ("better", -0.1, 0),
                ("worse", 0.1, 0),
                ("gentle", 0, 0.35),
            ):
                rows.append(
                    {
                        "pair": pair,
                        "method": method,
                        "knob": step,
                        "style_loss": (ratio + shift) * photo_style,
                        "content_loss": step + ssim_shift * -2,
                        "ssim": ssim + ssim_shift,
                    }
                )
    write_csv(path, rows)


def test_curves_name_the_method_with_more_style_at_the_same_content(tmp_path: Path) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_pairs(pairs)
    rows = curves.main(
        [str(pairs), "--reference", "base", "--steps", "1", "2", "3", "--out", str(tmp_path), "--name", "c"]
    )  # the default --share-steps: those of 2, 5, 10 the reference has, here 2
    verdict = {(r["method"], r["at_reference"]): r for r in rows}
    for measure in curves.MEASURES:
        assert verdict[("better", measure)]["dominates"] is True
        assert verdict[("worse", measure)]["dominates"] is False
        assert verdict[("better", measure)]["style_at_step2"] == pytest.approx(0.5)  # ratio per pair, then the mean
    gentle = verdict[("gentle", "ssim")]
    assert gentle["style_at_step2"] is None and gentle["dominates"] is False  # outside its curve: no claim
    assert "| better | ssim | 0.6 | 0.5 | 0.4 | True | True |" in (tmp_path / "c.md").read_text()
    assert verdict[("worse", "ssim")]["better"] is False and verdict[("base", "ssim")]["better"] == "-"
    shares = json.loads((tmp_path / "c.json").read_text())["extra_tables"]["Step-wise shares"]
    assert [r["share_below_step1_at_2"] for r in shares] == [1.0] * 4 and "share_below_step1_at_5" not in shares[0]


def test_curves_refuses_an_unknown_reference_or_step(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_pairs(pairs)
    for argv, expected in (
        (["--reference", "nope"], "'nope' is not a method"),
        (["--reference", "base", "--steps", "7"], "--steps [7]"),
        (["--reference", "base", "--steps", "2", "3", "--share-steps", "2", "10"], "--share-steps [10]"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            curves.main([str(pairs), *argv, "--out", str(tmp_path)])
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    assert not list(tmp_path.glob("curves.*"))


#: Per pair: the photo's style loss and an SSIM offset (the median SSIM's offset is 0.015, the mean's 0.0325).
PAIRS = {"a": (2.0, 0.0), "b": (4.0, 0.01), "c": (1.0, 0.02), "d": (8.0, 0.1)}


def ref_ratio(pair: str, step: int) -> float:
    """``ref``: loses style at every step, except that pair ``d``'s step 2 has more style than its step 1."""
    return 0.78 if (pair, step) == ("d", 2) else 0.8 - 0.03 * step


#: Style ratio per method, pair and step 1..10. Every method below has less style than ``ref`` at every step.
RATIOS = {
    "ref": ref_ratio,
    # every pair, every step: below the step before; the same SSIM as ref
    "steady": lambda pair, step: 0.7 - 0.03 * step,
    # steps 8..10 turn back in every pair (still below step 1 and below ref on average): dominates, not better
    "turns_back": lambda pair, step: 0.6 - 0.03 * step if step <= 7 else 0.39 + 0.02 * (step - 7),
    # pair a never moves: non-increasing everywhere (tolerance 0), but a's step 10 is not below its step 1
    "flat_one": lambda pair, step: 0.3 if pair == "a" else 0.7 - 0.03 * step,
}


def write_stepwise_pairs(path: Path) -> None:
    """Four pairs, 10 steps of the methods of :data:`RATIOS`, SSIM ``0.9 - 0.05 step`` plus the pair's offset."""
    rows: list[dict[str, object]] = []
    for pair, (photo_style, ssim_offset) in PAIRS.items():
        rows.append(photo_row(pair, photo_style))
        for method, ratio in RATIOS.items():
            for step in range(1, 11):
                rows.append(
                    {
                        "pair": pair,
                        "method": method,
                        "knob": step,
                        "style_loss": ratio(pair, step) * photo_style,
                        "content_loss": step,
                        "ssim": 0.9 - 0.05 * step + ssim_offset,
                    }
                )
    write_csv(path, rows)


def test_step_shares_count_pairs_whose_style_grows_step_by_step(tmp_path: Path) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_stepwise_pairs(pairs)
    shares = {r["method"]: r for r in curves.step_shares(curves.per_pair([pairs]))}
    expected = {  # pairs, share below step 1 at 2, 5, 10, share non-increasing
        "ref": (4, 0.75, 1.0, 1.0, 0.75),
        "steady": (4, 1.0, 1.0, 1.0, 1.0),
        "turns_back": (4, 1.0, 1.0, 1.0, 0.0),
        "flat_one": (4, 0.75, 0.75, 0.75, 1.0),
    }
    for method, values in expected.items():
        row = shares[method]
        keys = ("pairs", "share_below_step1_at_2", "share_below_step1_at_5", "share_below_step1_at_10")
        assert tuple(row[k] for k in (*keys, "share_non_increasing")) == pytest.approx(values), method
    ref = shares["ref"]
    assert ref["median_style_step2"] == pytest.approx(0.74) and ref["mean_style_step2"] == pytest.approx(0.75)
    assert ref["median_style_step10"] == pytest.approx(0.5)
    assert [ref[f"median_ssim_step{k}"] for k in (1, 10)] == pytest.approx([0.865, 0.415])
    assert shares["flat_one"]["median_style_step10"] == pytest.approx(0.4)  # 0.3 and three 0.4s
    assert curves.non_increasing([0.5, 0.5, 0.4]) and not curves.non_increasing([0.5, 0.4, 0.4 + 1e-9])
    assert curves.non_increasing([0.5, 0.51], tolerance=0.02)


def test_better_needs_domination_and_step_wise_shares(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_stepwise_pairs(pairs)
    rows = curves.main([str(pairs), "--reference", "ref", "--out", str(tmp_path), "--name", "s"])
    verdict = {(r["method"], r["at_reference"]): r for r in rows}
    for measure in curves.MEASURES:
        assert verdict[("ref", measure)]["dominates"] == verdict[("ref", measure)]["better"] == "-"
        for method in ("steady", "turns_back", "flat_one"):
            assert verdict[(method, measure)]["dominates"] is True, (method, measure)
        assert verdict[("steady", measure)]["better"] is True
        assert verdict[("turns_back", measure)]["better"] is False  # its late steps turn back
        assert verdict[("flat_one", measure)]["better"] is False  # fewer pairs below step 1 at step 10
    markdown = (tmp_path / "s.md").read_text()
    assert "## Step-wise shares" in markdown
    assert "| turns_back | 4 | 1 | 1 | 1 | 0 | 0.57 |" in markdown  # pairs, shares, median style at step 1
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["settings"]["share_steps"] == [2, 5, 10]
    assert len(document["extra_tables"]["Step-wise shares"]) == 4
    printed = capsys.readouterr().out
    assert "'share_non_increasing': 0.0" in printed and "'better': False" in printed
    # with k = 5 only, flat_one still falls short (0.75 < 1.0); turns_back still turns back
    rows = curves.main([str(pairs), "--reference", "ref", "--share-steps", "5", "--out", str(tmp_path)])
    assert {r["method"]: r["better"] for r in rows if r["at_reference"] == "ssim"} == {
        "ref": "-",
        "steady": True,
        "turns_back": False,
        "flat_one": False,
    }


def test_several_files_of_the_same_pairs_read_as_one(tmp_path: Path) -> None:
    """New models scored in a later run: the files are read as one; another size's photo scores or other pairs are
    refused."""
    whole = tmp_path / "q_pairs.csv"
    write_stepwise_pairs(whole)
    with open(whole) as f:
        rows = list(csv.DictReader(f))
    photo = [r for r in rows if r["method"] == curves.CONTENT_PHOTO]
    first, second = tmp_path / "a_pairs.csv", tmp_path / "b_pairs.csv"
    write_csv(first, photo + [r for r in rows if r["method"] in ("ref", "steady")])
    write_csv(second, photo + [r for r in rows if r["method"] in ("turns_back", "flat_one")])
    assert curves.per_pair([first, second]) == curves.per_pair([whole])
    rows_one = curves.main([str(whole), "--reference", "ref", "--out", str(tmp_path), "--name", "one"])
    rows_two = curves.main([str(first), str(second), "--reference", "ref", "--out", str(tmp_path), "--name", "two"])
    assert rows_one == rows_two
    other_size = [
        {**r, "style_loss": float(r["style_loss"]) * 2} if r["method"] == curves.CONTENT_PHOTO else r for r in rows
    ]
    write_csv(second, [r for r in other_size if r["method"] in (curves.CONTENT_PHOTO, "turns_back")])
    with pytest.raises(ValueError, match="differently"):
        curves.per_pair([first, second])
    one_pair = [r for r in rows if r["method"] == "turns_back" and r["pair"] == rows[0]["pair"]]
    write_csv(second, photo + one_pair)
    with pytest.raises(ValueError, match="different pairs"):
        curves.per_pair([first, second])
