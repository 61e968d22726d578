"""Checkpoints of a training run and resuming from them (the run folders of :mod:`agents.training.experiment`).

A run's ``checkpoints/`` holds ``rl_model_<steps>_steps.zip`` and, for off-policy algorithms, the
``replay_buffer_<steps>_steps.pkl`` saved with it (:class:`ResumableCheckpoint`); every file is written
atomically, so a kill at any moment leaves complete checkpoints only. :func:`latest_checkpoint` finds the one
``--resume`` continues from and :func:`load_checkpoint` loads it with its replay buffer.
"""

from __future__ import annotations

import pickle
import re
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.errors import CheckpointError, one_line
from agents.files import atomic_path

#: Checkpoint file names: ``rl_model_<steps>_steps.zip`` and its ``replay_buffer_<steps>_steps.pkl``.
CHECKPOINT_PATTERN = re.compile(r"rl_model_(\d+)_steps\.zip")
BUFFER_PATTERN = re.compile(r"replay_buffer_(\d+)_steps\.pkl")


def save_model(model: BaseAlgorithm, path: Path) -> Path:
    """``model.save(path)``, atomically: a kill during the save leaves the previous file (or none).

    :param model: the model to save.
    :param path: the ``.zip`` to write.
    """
    with atomic_path(path) as partial:
        model.save(partial)
    return path


def buffer_path(checkpoint: Path) -> Path:
    """The replay buffer saved with ``rl_model_<steps>_steps.zip``: ``replay_buffer_<steps>_steps.pkl`` beside it.

    :param checkpoint: the checkpoint zip.
    """
    return checkpoint.with_name(checkpoint.name.replace("rl_model_", "replay_buffer_").replace(".zip", ".pkl"))


class ResumableCheckpoint(CheckpointCallback):
    """SB3's CheckpointCallback that saves each checkpoint's replay buffer beside it (off-policy algorithms),
    every file atomically, keeping the buffers of the newest :attr:`keep_buffers` checkpoints to spare disk.

    Order of a save of step ``N``: an older ``rl_model_N_steps.zip`` (from a run resumed at an earlier step) is
    removed, the buffer ``replay_buffer_N_steps.pkl`` is written, then the model zip, then older buffers are
    pruned. Whenever the process is killed, every checkpoint zip present is complete and the buffer of the same
    step, when present, was saved with it.

    :param save_freq: save every ``save_freq`` calls (env steps per env).
    :param save_path: the run's ``checkpoints/`` folder.
    :param keep_buffers: how many of the newest checkpoints keep their replay buffer.
    """

    def __init__(self, save_freq: int, save_path: Path, keep_buffers: int = 2) -> None:
        super().__init__(save_freq, str(save_path), name_prefix="rl_model", save_replay_buffer=False)
        self.keep_buffers = keep_buffers

    def save_now(self) -> Path:
        """Write ``rl_model_<steps>_steps.zip`` and its ``replay_buffer_<steps>_steps.pkl``; return the model path.

        :raises OSError: a write failed (a full disk): nothing of this step is left (a buffer written before the
            model failed is removed: without its model it is never read), the earlier checkpoints are untouched,
            and the message names the checkpoint.
        """
        path = Path(self._checkpoint_path(extension="zip"))
        path.unlink(missing_ok=True)
        try:
            if isinstance(self.model, OffPolicyAlgorithm):
                with atomic_path(buffer_path(path)) as partial:
                    self.model.save_replay_buffer(partial)
            save_model(self.model, path)
        except OSError as exc:
            buffer_path(path).unlink(missing_ok=True)
            if exc.errno is None or exc.strerror is None:
                raise OSError(f"{one_line(exc)} (saving checkpoint {path.name})") from exc
            raise OSError(exc.errno, f"{exc.strerror} (saving checkpoint {path.name})") from exc
        self.prune_buffers()
        return path

    def prune_buffers(self) -> None:
        """Delete the replay buffers of all but the newest :attr:`keep_buffers` checkpoints (and orphans)."""
        folder = Path(self.save_path)
        steps = sorted(
            (int(m.group(1)) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.fullmatch(p.name))), reverse=True
        )
        keep = set(steps[: self.keep_buffers])
        for buffer in folder.iterdir():
            if (m := BUFFER_PATTERN.fullmatch(buffer.name)) and int(m.group(1)) not in keep:
                buffer.unlink(missing_ok=True)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_now()
        return True


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from as a Stable-Baselines3 model zip (``None``: it can).

    Checks that it is a complete zip (every member's CRC) holding SB3's ``data`` and ``policy.pth``.

    :param path: the candidate checkpoint.
    """
    if not zipfile.is_zipfile(path):
        return "not a zip archive (truncated, or not a model)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError, NotImplementedError) as exc:
        return f"a damaged zip archive ({exc})"
    if damaged is not None:
        return f"a damaged zip archive ({damaged} fails its checksum)"
    if not {"data", "policy.pth"} <= names:
        return "a zip archive but not a Stable-Baselines3 model (no data and policy.pth inside)"
    return None


def latest_checkpoint(path: Path) -> Path:
    """The checkpoint to resume from: ``path`` itself, or the newest complete one in a run folder's
    ``checkpoints/`` (a damaged newer one, e.g. from a copy cut short, is skipped with a warning).

    :param path: the ``--resume`` argument: a checkpoint zip or a run folder.
    :raises CheckpointError: no such file or folder, a damaged zip given explicitly, or no complete checkpoint.
    """
    if path.is_file():
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(f"--resume {path}: cannot resume from it, it is {problem}.")
        return path
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such run folder or checkpoint zip.")
    folder = path / "checkpoints"
    found = sorted(
        (
            (int(m.group(1)), p)
            for p in (folder.iterdir() if folder.is_dir() else [])
            if (m := CHECKPOINT_PATTERN.fullmatch(p.name))
        ),
        reverse=True,
    )
    for _, checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        print(f"warning: skipping {checkpoint}: it is {problem}.", file=sys.stderr)
    reason = "none of them is complete" if found else "there is none"
    raise CheckpointError(
        f"--resume {path}: expected a run folder with checkpoints/rl_model_<steps>_steps.zip, but {reason}."
    )


def resumed_seed(seed: int | None, steps: int) -> int | None:
    """The seed of a run resumed at ``steps``: the run's own seed and the step mixed (``np.random.SeedSequence``),
    so that a resumed run's envs and random generators neither repeat the run's start nor depend on anything but
    the checkpoint.

    :param seed: the run's seed (``None``: unseeded, and so stays the resumed run).
    :param steps: the checkpoint's step count.
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, steps]).generate_state(1)[0] >> 1)  # below 2**31: any RNG takes it


def load_checkpoint(algo_class: type[BaseAlgorithm], checkpoint: Path, env: VecEnv, device: str) -> BaseAlgorithm:
    """A checkpointed model on ``env``, with its replay buffer when one was saved beside it.

    :param algo_class: the model's algorithm.
    :param checkpoint: ``rl_model_<steps>_steps.zip``.
    :param env: the env to continue on.
    :param device: where the networks go.
    """
    try:
        model = algo_class.load(checkpoint, env=env, device=device)
    except Exception as exc:  # SB3 raises many kinds for a zip of another algorithm, policy or env
        raise CheckpointError(
            f"--resume: cannot load {checkpoint} as a {algo_class.__name__} model for this run "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    print(f"Resuming {checkpoint.parent.parent} from {checkpoint.name} at step {model.num_timesteps}.")
    # A checkpoint holds neither the envs' episodes in progress nor the random generators' states: the run goes on
    # with new episodes. Seeded with the run's seed they would draw the run's first images again at every resume.
    model.set_random_seed(resumed_seed(model.seed, model.num_timesteps))
    if isinstance(model, OffPolicyAlgorithm):
        load_buffer(model, checkpoint)
    return model


def load_buffer(model: OffPolicyAlgorithm, checkpoint: Path) -> None:
    """Load the replay buffer saved with ``checkpoint`` (:func:`buffer_path`); without one, say that the
    buffer starts empty and is refilled by the new steps.

    Runs written before buffers were saved per checkpoint kept one ``replay_buffer.pkl``, written after the
    newest checkpoint: it is used only with that checkpoint.

    :param model: the loaded model.
    :param checkpoint: the checkpoint it was loaded from.
    """
    buffer = buffer_path(checkpoint)
    legacy = checkpoint.parent / "replay_buffer.pkl"
    newest = max(checkpoint.parent.glob("rl_model_*_steps.zip"), key=lambda p: p.stat().st_mtime)
    if (
        not buffer.is_file()
        and legacy.is_file()
        and newest == checkpoint
        and legacy.stat().st_mtime >= checkpoint.stat().st_mtime
    ):
        buffer = legacy
    if buffer.is_file():
        try:
            model.load_replay_buffer(buffer)
            print(f"Replay buffer: {buffer.name}, {model.replay_buffer.size()} transitions.")
            return
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError) as exc:
            print(f"warning: {buffer} cannot be read ({type(exc).__name__}: {exc}).", file=sys.stderr)
    print(
        f"note: no replay buffer saved with {checkpoint.name}: the buffer starts empty and is refilled by the "
        f"new steps.",
        file=sys.stderr,
    )
