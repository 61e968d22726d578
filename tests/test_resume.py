"""``kill -9`` during training (and during a checkpoint save) loses nothing but the steps since the last complete
checkpoint, and ``--resume`` continues from it with the replay buffer saved with it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from agents import StyleSAC
from agents.cli import train_sac
from agents.training.checkpoints import buffer_path, checkpoint_problem, latest_checkpoint

FLAGS = [
    "--image-size",
    "16",
    "--save-freq",
    "5",
    "--eval-freq",
    "0",
    "--no-progress",
    "-v",
    "0",
    "--hyperparams",
    "learning_starts:5",
    "batch_size:2",
    "buffer_size:100",
]


def read_buffer(path: Path) -> object:
    with path.open("rb") as file:
        return pickle.load(file)


#: Runs the CLI and ``kill -9``\ s itself at the moment the second checkpoint's model zip is complete on disk
#: but not yet renamed into place: its buffer is written, a hidden partial file is open. Deterministic, unlike
#: polling for the partial file from outside (a save can finish between two polls).
KILLED_MID_SAVE = """
import os, signal, sys
from agents.cli import train_sac
rename = os.replace
def replace(src, dst):
    if str(dst).endswith("rl_model_10_steps.zip"):
        os.kill(os.getpid(), signal.SIGKILL)
    rename(src, dst)
os.replace = replace
sys.exit(train_sac.main(sys.argv[1:]))
"""


def test_kill_during_a_save_then_resume_continues_with_the_matching_buffer(tmp_path: Path, capsys) -> None:
    command = [sys.executable, "-c", KILLED_MID_SAVE, "-n", "30", "-f", str(tmp_path), *FLAGS]
    proc = subprocess.run(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr  # killed before it finished
    checkpoints = tmp_path / "style_sac_NST-v0_1" / "checkpoints"
    assert any(checkpoints.glob(".*.partial-*"))  # ... in the middle of a save
    run = checkpoints.parent
    assert not (run / "model.zip").exists()

    # The newest complete checkpoint and the buffer saved with it: every zip present is complete.
    newest = latest_checkpoint(run)
    assert all(checkpoint_problem(p) is None for p in checkpoints.glob("rl_model_*_steps.zip"))
    steps = int(newest.stem.split("_")[2])
    assert steps == 5  # the save of step 10 was cut short
    saved = read_buffer(buffer_path(newest))
    assert saved.pos == steps - 1  # the transition of the step that triggered the save is stored after it
    assert saved.observations["moving"][: saved.pos].any() and not saved.observations["moving"][saved.pos :].any()

    # A copy cut short that looks newer is skipped with a warning.
    (checkpoints / "rl_model_999_steps.zip").write_bytes(newest.read_bytes()[:1000])
    assert train_sac.main(["--resume", str(run), *FLAGS]) == 0
    assert "skipping" in capsys.readouterr().err and not list(checkpoints.glob(".*.partial-*"))
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == 30

    # The resumed buffer is the checkpoint's, continued: same first transitions, position at the new step.
    final = read_buffer(checkpoints / "replay_buffer_30_steps.pkl")
    assert final.pos == saved.pos + (30 - steps) - 1  # the resumed steps, less step 30's (stored after the save)
    for key in ("moving", "style"):
        np.testing.assert_array_equal(final.observations[key][: saved.pos], saved.observations[key][: saved.pos])
    np.testing.assert_array_equal(final.actions[: saved.pos], saved.actions[: saved.pos])
    np.testing.assert_array_equal(final.rewards[: saved.pos], saved.rewards[: saved.pos])
    # Only the newest 2 checkpoints keep a buffer (the damaged 999 counts as a checkpoint file but has none).
    buffers = {p.name for p in checkpoints.glob("replay_buffer_*_steps.pkl")}
    assert buffers <= {"replay_buffer_25_steps.pkl", "replay_buffer_30_steps.pkl"} and len(buffers) >= 1
