"""``benchmarks.soak`` at a test's size: both phases run in their own processes, the replay buffer fills, the
checkpoints come by the clock, and the results (table, samples, figure) are consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import soak


def test_soak_runs_both_phases_and_writes_consistent_results(tmp_path: Path) -> None:
    # A step budget, not a time (--minutes is the upper bound), so that a loaded machine does the same work.
    argv = ["--minutes", "10", "--max-steps", "40", "--image-size", "16", "--save-every-s", "0.2"]
    argv += ["--interval-s", "0.05", "--hyperparams", "buffer_size:20", "learning_starts:5", "batch_size:2"]
    argv += ["--images", "40", "--steps", "2", "--min-side", "16", "--max-side", "40", "--backend", "torch"]
    training, stylisation = soak.main([*argv, "--threads", "1", "--out", str(tmp_path)])

    assert {p.name for p in tmp_path.iterdir()} == {f"soak.{e}" for e in ("md", "csv", "json", "png")} | {
        "soak_rss.csv"
    }
    samples = pd.read_csv(tmp_path / "soak_rss.csv")
    train = samples[samples["phase"] == "training"]
    assert train["seconds"].is_monotonic_increasing and train["buffer_transitions"].is_monotonic_increasing
    assert train["buffer_transitions"].iloc[-1] == 20 and training["window"] == "buffer full"
    assert training["work"] == 40 and training["checkpoints"] >= 2
    assert 0 < training["buffer_mib"] < 5  # 20 transitions of 16 px images and their VGG features
    styled = samples[samples["phase"] == "stylisation"]
    assert stylisation["work"] == 40 and stylisation["backend"] == "TorchRunner"
    assert styled["images"].is_monotonic_increasing and styled["images"].iloc[0] == 0
    for row, phase in ((training, train), (stylisation, styled)):
        assert 100 < phase["rss_mib"].max() <= row["peak_rss_mib"] + 1  # the high-water mark bounds the samples
        assert np.isfinite(row["slope_mib_per_h"]) and np.isfinite(row["unexplained_mib_per_h"])
    document = json.loads((tmp_path / "soak.json").read_text())
    assert [r["phase"] for r in document["rows"]] == ["training", "stylisation"]
    assert "load_average_1_5_15min" in document["machine"]
