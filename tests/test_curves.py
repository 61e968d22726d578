"""``benchmarks.curves``: the package's verdict between step-wise methods, read from a quality pairs CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks import curves


def write_pairs(path: Path) -> None:
    """Two pairs; ``base`` loses style step by step, ``better`` has 0.1 less style at every SSIM, ``gentle``
    keeps more SSIM than ``base``'s last step, ``worse`` has more style."""
    rows = []
    for pair, photo_style in (("a", 2.0), ("b", 4.0)):
        rows.append(
            {
                "pair": pair,
                "method": curves.CONTENT_PHOTO,
                "knob": 0,
                "style_loss": photo_style,
                "content_loss": 0,
                "ssim": 1,
            }
        )
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
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_curves_name_the_method_with_more_style_at_the_same_content(tmp_path: Path) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_pairs(pairs)
    rows = curves.main(
        [str(pairs), "--reference", "base", "--steps", "1", "2", "3", "--out", str(tmp_path), "--name", "c"]
    )
    verdict = {(r["method"], r["at_reference"]): r for r in rows}
    for measure in curves.MEASURES:
        assert verdict[("better", measure)]["dominates"] is True
        assert verdict[("worse", measure)]["dominates"] is False
        assert verdict[("better", measure)]["style_at_step2"] == pytest.approx(0.5)  # ratio per pair, then the mean
    gentle = verdict[("gentle", "ssim")]
    assert gentle["style_at_step2"] is None and gentle["dominates"] is False  # outside its curve: no claim
    assert "| better | ssim | 0.6 | 0.5 | 0.4 | True |" in (tmp_path / "c.md").read_text()


def test_curves_refuses_an_unknown_reference_or_step(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "q_pairs.csv"
    write_pairs(pairs)
    for argv, expected in (
        (["--reference", "nope"], "'nope' is not a method"),
        (["--reference", "base", "--steps", "7"], "--steps [7]"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            curves.main([str(pairs), *argv, "--out", str(tmp_path)])
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    assert not list(tmp_path.glob("curves.*"))
