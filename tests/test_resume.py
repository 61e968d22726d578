"""``kill -9`` during training (and during a checkpoint save) loses nothing but the steps since the last complete
checkpoint, and ``--resume`` continues from it with the replay buffer saved with it: one kill in the middle of a
save; kills at moments drawn at random in collection, updates and saves (3 here, 10 with ``-m slow``), after which
the run ends with the transitions and weights of a run stopped cleanly at the same checkpoints; and a full disk
(ENOSPC) during a save, which keeps the previous checkpoint and ends the command with one line."""

from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents import StyleSAC
from agents.cli import train_sac
from agents.training.checkpoints import buffer_path, checkpoint_problem, latest_checkpoint

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # the in-process runs, as the subprocesses run

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
    # ... then new episodes, not the run's first again (the resumed run is seeded from the seed and the step).
    first, after = ({key: final.observations[key][i] for key in ("moving", "style")} for i in (0, saved.pos))
    assert not all(np.array_equal(first[key], after[key]) for key in first)
    # Only the newest 2 checkpoints keep a buffer (the damaged 999 counts as a checkpoint file but has none).
    buffers = {p.name for p in checkpoints.glob("replay_buffer_*_steps.pkl")}
    assert buffers <= {"replay_buffer_25_steps.pkl", "replay_buffer_30_steps.pkl"} and len(buffers) >= 1


#: Runs the CLI and SIGKILLs itself at one moment of training, given by the first three arguments: the phase
#: (``collect``: ``StyleSAC.collect_rollouts``, one env step with its callbacks and its transition stored;
#: ``update``: ``StyleSAC.train``; ``save``: ``ResumableCheckpoint.save_now``), which call of it (1-based, counted
#: in this process), and how many profiling events (Python and C function calls and returns, ``sys.setprofile``)
#: into that call the kill comes (at the call's end when it makes fewer). Before the kill it writes the phase and
#: the function running to stderr. Deterministic: a failing schedule replays.
KILLED_AT = """
import os, signal, sys
from agents.cli import train_sac
from agents.style_sac import StyleSAC
from agents.training.checkpoints import ResumableCheckpoint

phase, call, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
owner, name = {
    "collect": (StyleSAC, "collect_rollouts"),
    "update": (StyleSAC, "train"),
    "save": (ResumableCheckpoint, "save_now"),
}[phase]
original, calls, left = getattr(owner, name), [0], [events]

def kill(where):
    sys.stderr.write(f"killed: {phase} {where}\\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def profile(frame, event, arg):
    left[0] -= 1
    if left[0] <= 0:
        kill(frame.f_code.co_qualname)

def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] != call:
        return original(*args, **kwargs)
    sys.setprofile(profile)
    original(*args, **kwargs)
    kill("(at its end)")

setattr(owner, name, killing)
sys.exit(train_sac.main(sys.argv[4:]))
"""
#: Steps of the killed runs (the last checkpoint is at 50: every process has steps to make) and their settings.
KILLED_STEPS, SAVE_FREQ, LEARNING_STARTS = 52, 5, 5
#: Profiling events of one call of each phase at 16 px, roughly: a kill's moment is drawn up to these.
PHASE_EVENTS = {"collect": 6500, "update": 17000, "save": 350000}


def draw_kill(rng: np.random.Generator, checkpoint: int, window: int) -> tuple[str, int, int, int]:
    """A moment to kill a process resumed at step ``checkpoint`` (0: a new run): ``(phase, call, events, step)``,
    the step drawn from the next ``window`` steps.

    :param rng: the schedule's generator.
    :param checkpoint: the step the process starts from.
    :param window: how far after it the kill may come.
    """
    last = min(KILLED_STEPS, checkpoint + window)
    saves = [s for s in range(checkpoint + 1, last + 1) if s % SAVE_FREQ == 0]
    phase = str(rng.choice(["collect", "update", "save"] if saves else ["collect", "update"]))
    if phase == "save":
        step = int(rng.choice(saves))
        call = (step - checkpoint) // SAVE_FREQ
    else:
        first = checkpoint if phase == "collect" else max(checkpoint, LEARNING_STARTS)  # updates start after it
        step = int(rng.integers(first + 1, last + 1))
        call = step - first
    return phase, call, int(rng.integers(1, PHASE_EVENTS[phase] + 1)), step


def same_transitions(a: Any, b: Any) -> bool:
    """Whether two replay buffers hold the same transitions, bit for bit, up to the same position."""
    if (a.pos, a.full) != (b.pos, b.full):
        return False
    arrays = [(getattr(a, k), getattr(b, k)) for k in ("actions", "rewards", "dones", "timeouts", "has_features")]
    for name in ("observations", "next_observations", "features"):
        ours, theirs = getattr(a, name), getattr(b, name)
        if ours.keys() != theirs.keys():
            return False
        arrays += [(ours[key], theirs[key]) for key in ours]
    return all(np.array_equal(x, y) for x, y in arrays)


def kill_and_resume(tmp_path: Path, kills: int, seed: int) -> tuple[Path, list[int], list[str]]:
    """Train :data:`KILLED_STEPS` steps at 16 px, SIGKILLed at ``kills`` moments drawn from a seeded generator
    (:func:`draw_kill`, spread over the run) and resumed after each, then finished.

    :return: the run folder, the checkpoints it resumed from (in order, without repeats) and where each kill
        landed.
    """
    first = ["-n", str(KILLED_STEPS), "-f", str(tmp_path), *FLAGS]
    run = tmp_path / "style_sac_NST-v0_1"
    rng = np.random.default_rng(seed)
    resumed_from: list[int] = []
    landed: list[str] = []
    for _ in range(kills):
        saved = any(run.glob("checkpoints/rl_model_*_steps.zip"))
        checkpoint = int(latest_checkpoint(run).stem.split("_")[2]) if saved else 0
        if checkpoint == 0:
            shutil.rmtree(run, ignore_errors=True)  # killed before its first checkpoint: start it again
        else:
            resumed_from.append(checkpoint)
        phase, call, events, step = draw_kill(rng, checkpoint, window=max(SAVE_FREQ, 2 * KILLED_STEPS // kills))
        argv = first if checkpoint == 0 else ["--resume", str(run)]
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_AT, phase, str(call), str(events), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        assert proc.returncode == -9, (phase, call, events, proc.stderr)
        where = proc.stderr.strip().splitlines()[-1].removeprefix(f"killed: {phase} ")
        landed.append(f"{phase} of step {step}, in {where}")
    resumed_from.append(int(latest_checkpoint(run).stem.split("_")[2]))
    assert train_sac.main(["--resume", str(run)]) == 0
    return run, sorted(set(resumed_from)), landed


def fit_as_the_command(argv: list[str]) -> StyleSAC:
    """Train the run ``python -m agents.train_sac ARGV`` asks for (new or resumed) as the command does, without
    its ending (``model.zip``, ``sequence.png``); return the model."""
    parser = train_sac.build_parser()
    experiment = train_sac.experiment_from_args(parser.parse_args(argv), train_sac.given_flags(parser, argv))
    torch.set_flush_denormal(True)  # as the command does: flushing changes the arithmetic
    model = experiment.build_model()
    assert experiment.fit(model)
    return model


def check_killed_run(tmp_path: Path, run: Path, resumed_from: list[int]) -> None:
    """The killed run reached its step count with every file complete, and its transitions up to its last
    checkpoint and its final weights are, bit for bit, those of the same run stopped cleanly (``-n``) at each
    checkpoint it resumed from and resumed there (an uninterrupted run up to the first of them).

    Not those of one uninterrupted run all along: a checkpoint holds neither the episode in progress nor the
    random generators' states, so a resumed run starts new episodes where the uninterrupted one went on.
    """
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == KILLED_STEPS
    assert not list(run.rglob(".*.partial-*"))
    assert all(checkpoint_problem(p) is None for p in run.glob("checkpoints/rl_model_*_steps.zip"))

    stopped = tmp_path / "stopped"
    fit_as_the_command(["-n", str(resumed_from[0]), "-f", str(stopped), *FLAGS])
    for stop in [*resumed_from[1:], KILLED_STEPS]:
        model = fit_as_the_command(["--resume", str(stopped / run.name), "-n", str(stop)])

    last = KILLED_STEPS // SAVE_FREQ * SAVE_FREQ
    buffer = f"checkpoints/replay_buffer_{last}_steps.pkl"
    ours, clean = read_buffer(run / buffer), read_buffer(stopped / run.name / buffer)
    # Every step's transition once, but those of the steps resumed from: stored after their checkpoint's save.
    assert ours.pos == last - 1 - sum(step < last for step in resumed_from)
    assert same_transitions(ours, clean)
    with zipfile.ZipFile(run / "model.zip") as archive:
        weights = torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)
    clean_weights = model.policy.state_dict()
    assert weights.keys() == clean_weights.keys()
    assert all(torch.equal(weights[k], clean_weights[k]) for k in weights)


def test_kills_at_random_moments_then_resumes_end_as_a_run_stopped_cleanly_there(tmp_path: Path) -> None:
    run, resumed_from, _ = kill_and_resume(tmp_path / "killed", kills=3, seed=0)
    check_killed_run(tmp_path, run, resumed_from)


@pytest.mark.slow  # 10 kills: 11 processes
def test_ten_kills_at_random_moments_then_resumes_end_as_a_run_stopped_cleanly_there(tmp_path: Path) -> None:
    run, resumed_from, landed = kill_and_resume(tmp_path / "killed", kills=10, seed=1)
    print(f"resumed from {resumed_from}; kills: {landed}")
    check_killed_run(tmp_path, run, resumed_from)


def fill_disk(monkeypatch: pytest.MonkeyPatch, step: int, full_at: str, room: int) -> dict[str, bytes]:
    """Make the checkpoint save of ``step`` fail as on a full disk: writing its file ``full_at`` (``rl_model`` or
    ``replay_buffer``) stops at ``room`` bytes, then fails with ENOSPC. ``io.open``, which ``pathlib`` opens files
    with, gives a real file whose ``write`` does so.

    :return: filled when the save starts with the bytes of every file then in the checkpoint folder.
    """
    before: dict[str, bytes] = {}
    real_open = io.open

    class FullFile(io.FileIO):
        def write(self, data: Any) -> int:  # as write(2) on a full disk: what fits, then ENOSPC
            if self.tell() >= room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(memoryview(data).cast("B")[: room - self.tell()])

    def open_on_a_full_disk(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if f"_{step}_steps" in name and "w" in mode and not before:
            before.update({p.name: p.read_bytes() for p in Path(name).parent.iterdir()})
        if f"{full_at}_{step}_steps" in name and "w" in mode:
            return io.BufferedWriter(FullFile(file, "w"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", open_on_a_full_disk)
    return before


@pytest.mark.parametrize("full_at", ["replay_buffer", "rl_model"])
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_ends_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, full_at: str
) -> None:
    before = fill_disk(monkeypatch, step=10, full_at=full_at, room=4096)
    with pytest.raises(SystemExit) as exit_info:
        train_sac.main(["-n", "30", "-f", str(tmp_path), *FLAGS])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    run = tmp_path / "style_sac_NST-v0_1"
    assert err.splitlines() == [
        f"error: Training stopped at step 10: [Errno 28] No space left on device (saving checkpoint "
        f"rl_model_10_steps.zip). The newest checkpoint, rl_model_5_steps.zip, is complete: once the cause is fixed "
        f"(e.g. disk space freed), continue with: python -m agents.train_sac --resume {run}"
    ]
    # The previous checkpoint as it was, nothing of the failed one (a buffer written whole is removed too).
    checkpoints = run / "checkpoints"
    assert sorted(before) == ["replay_buffer_5_steps.pkl", "rl_model_5_steps.zip"]
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before

    monkeypatch.undo()  # space freed
    assert train_sac.main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "from rl_model_5_steps.zip at step 5" in out and "Replay buffer: replay_buffer_5_steps.pkl" in out
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == 30
