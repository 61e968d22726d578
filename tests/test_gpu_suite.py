"""The wall-clock budget of ``agents.train_sac`` and the GPU suite's dry run on the CPU."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from agents import StyleSAC, train_sac

TINY = ["--image-size", "16", "--no-progress", "-v", "0", "--save-freq", "0", "--eval-freq", "0",
        "--hyperparams", "learning_starts:5", "batch_size:4", "buffer_size:100"]


def test_max_minutes_stops_training_then_saves_and_draws(tmp_path: Path) -> None:
    start = time.monotonic()
    code = train_sac.main(["-n", "1000000", "--max-minutes", "0.05", "-f", str(tmp_path), *TINY])
    assert code == 0
    run = tmp_path / "style_sac_NST-v0_1"
    steps = StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps
    assert 5 < steps < 1_000_000  # updates ran, and the budget (3 s), not -n, ended training
    assert Image.open(run / "sequence.png").size == (12 * 128, 3 * 128)
    assert time.monotonic() - start < 60
