"""The corpus split and the side-by-side training benchmark: held-out files stay held out, the dominance test
reads the curves right, and the whole benchmark runs end to end on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import corpus, training_dynamics
from benchmarks.curves import interpolate_style
from benchmarks.training_dynamics import Setting, dominance


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus of 12 photos and 12 artworks (random 40x40 images) in nested folders."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for kind in corpus.KINDS:
        for k in range(12):
            path = root / kind / f"set{k % 3}" / f"{kind}{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return root


def test_split_is_disjoint_stable_and_complete(tiny_corpus: Path, tmp_path: Path) -> None:
    split = corpus.split_corpus(tiny_corpus, eval_fraction=0.5)
    for kind in corpus.KINDS:
        train, held_out = set(split["train"][kind]), set(split["eval"][kind])
        assert not train & held_out and len(train | held_out) == 12 and train and held_out
    assert corpus.split_corpus(tiny_corpus, eval_fraction=0.5) == split  # no dependence on listing order
    # a file added later never moves another one
    extra = tiny_corpus / "photos" / "set0" / "added.png"
    Image.new("RGB", (40, 40)).save(extra)
    try:
        again = corpus.split_corpus(tiny_corpus, eval_fraction=0.5)
        assert set(split["eval"]["photos"]) <= set(again["eval"]["photos"])
        assert set(split["train"]["photos"]) <= set(again["train"]["photos"])
    finally:
        extra.unlink()
    manifest = corpus.materialise(split, tiny_corpus, tmp_path / "split")
    assert len(list((tmp_path / "split" / "eval" / "art").iterdir())) == len(split["eval"]["art"])
    assert json.loads(manifest.read_text())["eval"]["art"] == [
        p.relative_to(tiny_corpus).as_posix() for p in split["eval"]["art"]
    ]
    with pytest.raises(ValueError, match="eval_fraction"):
        corpus.split_corpus(tiny_corpus, eval_fraction=1.0)


def test_interpolation_and_dominance() -> None:
    points = [(0.8, 0.7), (0.6, 0.5), (0.4, 0.45)]  # (ssim, style) of steps 1..3
    assert interpolate_style(points, 0.7) == pytest.approx(0.6)
    assert interpolate_style(points, 0.9) is None  # outside the curve: no claim
    released = {
        s: {"ssim": 0.9 - 0.05 * s, "style_ratio": 0.7 - 0.02 * s, "content_loss": float(s)} for s in range(1, 11)
    }
    better = {s: {**v, "style_ratio": v["style_ratio"] - 0.1} for s, v in released.items()}
    worse = {s: {**v, "style_ratio": v["style_ratio"] + 0.1} for s, v in released.items()}
    assert dominance(better, released)["dominates_released"] and not dominance(worse, released)["dominates_released"]
    row = dominance(better, released)
    assert row["ssim_step1"] == pytest.approx(0.85) and row["style_falls_1_to_5"] and row["content_rises_1_to_5"]


def test_benchmark_end_to_end_on_tiny_settings(tiny_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    corpus.materialise(corpus.split_corpus(tiny_corpus, eval_fraction=0.5), tiny_corpus, tmp_path / "split")
    tiny = {
        "tiny_default": Setting("tiny", 16, 3, 4),
        "tiny_critic_style": Setting(
            "tiny, critics see the style", 16, 3, 4, None, ("policy_kwargs.critic_style:true",)
        ),
    }
    monkeypatch.setattr(training_dynamics, "SETTINGS", tiny)
    out = tmp_path / "results"
    rows = training_dynamics.main(
        [
            "--train",
            "--settings",
            *tiny,
            "--seeds",
            "0",
            "--data",
            str(tmp_path / "split"),
            "--runs",
            str(tmp_path / "runs"),
            "--pairs",
            "2",
            "--size",
            "32",
            "--steps",
            "10",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert {(r["setting"], r["step"]) for r in rows} == {(s, k) for s in ("rlministyler", *tiny) for k in range(1, 11)}
    assert all(0.0 <= r["ssim"] <= 1.0 and r["style_ratio"] > 0 for r in rows)
    document = json.loads((out / "training_dynamics.json").read_text())
    runs = next(iter(document["extra_tables"].values()))
    assert [r["setting"] for r in runs] == list(tiny)
    for name in ("training_dynamics_tradeoff.png", "training_dynamics_curves.png", "training_dynamics.md"):
        assert (out / name).stat().st_size > 0
    held_out = {p.name for p in (tmp_path / "split" / "eval" / "photos").iterdir()}
    pairs = (out / "training_dynamics_quality_32px_pairs.csv").read_text()
    assert all(
        Path(line.split(" x ")[0]).name.split(".")[0] in {Path(h).stem for h in held_out}
        for line in pairs.splitlines()[1:]
    )  # only held-out photos were evaluated
