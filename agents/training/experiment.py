"""One training run, RL Baselines3 Zoo's ``ExperimentManager`` in small: :class:`Experiment` owns a run folder
(``config.yml``: the hyper-parameters; ``args.yml``: the :class:`~agents.training.config.RunSettings`), builds the
env and the model, and fits with logs, checkpoints, evaluation and a wall-clock budget; :func:`run_distributed`
runs it as one rank of a ``torchrun`` launch (:mod:`agents.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger, make_output_format
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.errors import CheckpointError, ConfigError, RLNSTError, TrainingStoppedError, one_line
from agents.files import atomic_path, remove_partial_files
from agents.inference.pictures import save_sequence_picture
from agents.style_sac import StyleSAC
from agents.training.checkpoints import (
    CHECKPOINT_PATTERN,
    ResumableCheckpoint,
    latest_checkpoint,
    load_checkpoint,
    save_model,
)
from agents.training.config import VEC_ENVS, RunSettings, action_noise, algorithm_class, algorithm_kwargs
from agents.training.distributed import ProcessGroup, replicate
from agents.training.vec_env import has_vector_entry_point, make_batched_vec_env

#: The run folder's two records: the hyper-parameters and the run's own settings.
CONFIG_FILE, SETTINGS_FILE = "config.yml", "args.yml"


def next_run_dir(log_folder: Path, env_id: str, algo: str = "style_sac") -> Path:
    """``log_folder/<algo>_<env>_<k>`` with the next free ``k``."""
    log_folder.mkdir(parents=True, exist_ok=True)
    pattern = rf"{re.escape(algo)}_{re.escape(env_id)}_(\d+)"
    taken = [int(m.group(1)) for p in log_folder.iterdir() if (m := re.fullmatch(pattern, p.name))]
    return log_folder / f"{algo}_{env_id}_{max(taken, default=0) + 1}"


def claim_run_dir(log_folder: Path, env_id: str, algo: str) -> Path:
    """:func:`next_run_dir`, created here: when another process creates the same folder first, the next one is
    taken, so that runs started together into one log folder (``benchmarks.compare_algorithms --workers``) get
    a folder each.

    :param log_folder: where run folders are created.
    :param env_id: the environment id.
    :param algo: the algorithm's name.
    """
    while True:
        run_dir = next_run_dir(log_folder, env_id, algo)
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir


def write_yaml(path: Path, values: Mapping[str, Any]) -> None:
    """Write ``values`` as YAML to ``path``, atomically.

    :param path: the file.
    :param values: what to write.
    """
    with atomic_path(path) as partial:
        partial.write_text(yaml.safe_dump(dict(values), sort_keys=False))


def make_env(
    config: Mapping[str, Any],
    run_dir: Path | None,
    device: str,
    resume: bool,
    seed_offset: int = 0,
    vec_env: str = "batched",
) -> VecEnv:
    """The vectorised training or evaluation env of a run, monitored into the run folder.

    :param config: the run configuration (``env_id``, ``env_kwargs``, ``n_envs``, ``seed``).
    :param run_dir: the run folder, whose ``monitor/`` (training) or ``eval/`` gets the Monitor files (``None``:
        no Monitor files, as on the ranks other than 0 of a distributed run).
    :param device: where the env's VGG-19 runs.
    :param resume: keep the existing Monitor files (append to them).
    :param seed_offset: added to the seed; non-zero makes the single evaluation env.
    :param vec_env: how ``n_envs > 1`` envs run (one of :data:`~agents.training.config.VEC_ENVS`): ``"batched"``,
        one batched env from the env's ``vector_entry_point`` (:func:`~agents.training.vec_env.make_batched_vec_env`,
        ``VecMonitor``; an env without one runs in ``SubprocVecEnv``); ``"subproc"``, SB3's ``SubprocVecEnv``;
        ``"dummy"``, SB3's ``DummyVecEnv``. One env always runs in a ``DummyVecEnv``.
    :raises ConfigError: an unknown ``vec_env``.
    """
    if vec_env not in VEC_ENVS:
        raise ConfigError(f"vec_env must be one of {', '.join(VEC_ENVS)}, got {vec_env!r}.")
    n_envs = config["n_envs"] if seed_offset == 0 else 1
    env_id = config["env_id"] if ":" in config["env_id"] else f"nst_env:{config['env_id']}"  # registers in workers
    monitor_dir = run_dir / ("monitor" if seed_offset == 0 else "eval") if run_dir is not None else None
    env_kwargs = {**config["env_kwargs"], "device": device}
    seed = config["seed"] + seed_offset
    if n_envs > 1 and vec_env == "batched" and has_vector_entry_point(env_id):
        monitor_file = monitor_dir / "0" if monitor_dir is not None else None  # monitor/0.monitor.csv: every env
        return make_batched_vec_env(env_id, n_envs, seed, env_kwargs, monitor_file, append=resume)
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        monitor_dir=str(monitor_dir) if monitor_dir is not None else None,
        monitor_kwargs={"override_existing": not resume},
        vec_env_cls=DummyVecEnv if n_envs == 1 or vec_env == "dummy" else SubprocVecEnv,
    )


class WallClockLimit(BaseCallback):
    """Stop training once a wall-clock budget is spent (``max_minutes``): ``learn`` then returns as after its last
    step, so the run ends like a finished one (``model.zip``, ``sequence.png``).

    The clock starts when learning starts (after the envs and the model are built); the step in progress when
    the budget runs out is finished first. In a distributed run the ranks stop together, at the first step at
    which any rank's budget is spent (one tiny all-reduce per env step), since they must make the same updates.

    :param seconds: the training budget in seconds.
    :param verbose: 1 prints the step at which the budget stopped training.
    :param group: the process group of a distributed run (``None``: a single process).
    """

    def __init__(self, seconds: float, verbose: int = 0, group: ProcessGroup | None = None) -> None:
        super().__init__(verbose)
        self.seconds = seconds
        self.group = group
        self.deadline = 0.0

    def _on_training_start(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def _on_step(self) -> bool:
        spent = time.monotonic() >= self.deadline
        if not (self.group.any(spent) if self.group is not None else spent):
            return True
        if self.verbose >= 1:
            print(f"Time budget of {self.seconds / 60:g} min spent: stopping at step {self.num_timesteps}.")
        return False


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclasses.dataclass
class Experiment:
    """One training run: what it trains (``config``), how it runs (``settings``) and where it writes (``run_dir``).

    Make one with :meth:`create` (a new run folder) or :meth:`resume` (an existing one), then :meth:`run` it.

    :param algo: the algorithm's name (a key of :data:`agents.training.config.ALGOS`).
    :param config: the run configuration (:func:`agents.training.config.build_config`).
    :param settings: the run's settings.
    :param run_dir: the run folder (``None`` on the ranks other than 0 of a distributed run: nothing is written).
    :param checkpoint: the checkpoint to continue from (``None``: a new model).
    :param group: the process group of a distributed run (``None``: a single process).
    :param resumed: whether the run continues an earlier one (its step count and logs go on).
    """

    algo: str
    config: dict[str, Any]
    settings: RunSettings
    run_dir: Path | None
    checkpoint: Path | None = None
    group: ProcessGroup | None = None
    resumed: bool = False

    @classmethod
    def create(cls, algo: str, config: Mapping[str, Any], settings: RunSettings) -> Experiment:
        """A new run: ``<log folder>/<algo>_<env>_<k>/`` with both records.

        :param algo: the algorithm's name.
        :param config: the run configuration.
        :param settings: the run's settings.
        """
        config = {**config, "algo": algo}
        run_dir = claim_run_dir(Path(settings.log_folder), config["env_id"], algo)
        (run_dir / "checkpoints").mkdir()
        experiment = cls(algo, config, settings, run_dir)
        experiment.write_records()
        return experiment

    @classmethod
    def resume(
        cls, path: Path, algo: str, overrides: Mapping[str, Any] | None = None, n_timesteps: int | None = None
    ) -> Experiment:
        """The run that ``path`` (a run folder or one of its checkpoint zips) belongs to, at its newest complete
        checkpoint, with the settings it was saved with; each of ``overrides`` that differs replaces the saved
        one, with a note.

        :param path: a run folder or checkpoint zip.
        :param algo: the algorithm the run must have been trained with.
        :param overrides: settings given again (:class:`RunSettings` field names).
        :param n_timesteps: a new total step count (``None``: the saved one).
        :raises CheckpointError: no complete checkpoint, no readable ``config.yml``, or another algorithm's run.
        """
        checkpoint = latest_checkpoint(path)
        run_dir = checkpoint.parent.parent
        try:
            config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(
                f"--resume {path}: expected {checkpoint.name} in RUN_DIR/checkpoints/ of a run "
                f"with its RUN_DIR/config.yml, but {run_dir / CONFIG_FILE} cannot be read ({exc})."
            ) from exc
        if not isinstance(config, dict) or "env_id" not in config:
            raise CheckpointError(f"--resume {path}: {run_dir / CONFIG_FILE} is not a run configuration.")
        if config.get("algo", "style_sac") != algo:
            raise CheckpointError(f"{run_dir} was trained with {config.get('algo', 'style_sac')}, not {algo}.")
        settings = cls.saved_settings(run_dir)
        changed = {k: v for k, v in (overrides or {}).items() if getattr(settings, k) != v}
        for key, value in changed.items():
            print(f"note: {key} {value!r} from the command line replaces the run's saved {getattr(settings, key)!r}.")
        settings = dataclasses.replace(settings, **changed)
        if n_timesteps is not None:
            config["n_timesteps"] = n_timesteps
        remove_partial_files(run_dir / "checkpoints")
        experiment = cls(algo, config, settings, run_dir, checkpoint, resumed=True)
        experiment.write_records()
        return experiment

    @staticmethod
    def saved_settings(run_dir: Path) -> RunSettings:
        """The settings a run was saved with (``args.yml``; a run from before it was written: the defaults).

        :param run_dir: the run folder.
        :raises CheckpointError: an ``args.yml`` that cannot be read.
        """
        path = run_dir / SETTINGS_FILE
        if not path.is_file():
            print(f"note: {run_dir} has no {SETTINGS_FILE} (an older run): resuming with the default settings.")
            return RunSettings()
        try:
            values = yaml.safe_load(path.read_text())
            return RunSettings.from_dict(values, path)
        except (OSError, yaml.YAMLError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"--resume {run_dir}: {path} cannot be read as run settings ({exc}).") from exc

    def write_records(self) -> None:
        """Write ``config.yml`` and ``args.yml`` to the run folder (nothing without one)."""
        if self.run_dir is not None:
            write_yaml(self.run_dir / CONFIG_FILE, self.config)
            write_yaml(self.run_dir / SETTINGS_FILE, self.settings.to_dict())

    @property
    def command(self) -> str:
        """The command that continues this run with ``--resume``."""
        return (
            "python -m agents.train_sac" if self.algo == "style_sac" else f"python -m agents.train --algo {self.algo}"
        )

    def make_env(self, evaluation: bool = False) -> VecEnv:
        """The run's training env (or its single evaluation env), monitored into the run folder.

        :param evaluation: the evaluation env (seed offset 1000, ``eval/`` Monitor files).
        """
        offset = 1000 if evaluation else 0
        return make_env(self.config, self.run_dir, self.settings.device, self.resumed, offset, self.settings.vec_env)

    def build_model(self) -> BaseAlgorithm:
        """The run's model on its env: the checkpoint's, or a new one (from ``init``'s released weights if asked).

        :raises ConfigError: hyper-parameters the algorithm or its policy refuses, or ``init`` weights that do
            not fit the policy.
        """
        algo_class = algorithm_class(self.algo)
        env = self.make_env()
        if self.checkpoint is not None:
            return load_checkpoint(algo_class, self.checkpoint, env, self.settings.device)
        kwargs = algorithm_kwargs(self.config, algo_class)
        noise = action_noise(self.config, env.action_space)  # type: ignore[arg-type]
        if noise is not None:
            kwargs["action_noise"] = noise
        try:
            model = algo_class(
                self.config["policy"],
                env,
                seed=self.config["seed"],
                device=self.settings.device,
                verbose=self.settings.verbose,
                **kwargs,
            )
        except (TypeError, ValueError, KeyError, AssertionError) as exc:  # SB3 checks some values with assert
            raise ConfigError(
                f"The hyper-parameters do not fit {algo_class.__name__} ({type(exc).__name__}: {exc}); "
                f"check --hyperparams and the hyper-parameter file."
            ) from exc
        if self.config.get("init"):
            try:
                model.load_pretrained(self.config["init"])  # type: ignore[attr-defined]
            except (FileNotFoundError, ValueError) as exc:
                raise ConfigError(f"--init {self.config['init']} does not fit {self.config['policy']}: {exc}") from exc
        return model

    def fit(self, model: BaseAlgorithm) -> bool:
        """Train to ``config["n_timesteps"]`` (or until ``max_minutes`` are spent: :class:`WallClockLimit`) with
        logs, checkpoints and evaluation; Ctrl-C or SIGTERM saves a checkpoint and prints the resume command. The
        env is closed at the end. Without a run folder (the ranks other than 0) nothing is logged or saved.

        :param model: the model (new or resumed).
        :return: ``False`` when interrupted.
        :raises TrainingStoppedError: an ``OSError`` other than the package's own (a full disk during a checkpoint
            save) stopped training; the message names the newest checkpoint and the command that continues the run.
        """
        settings, n_envs, resumed = self.settings, self.config["n_envs"], self.resumed
        callbacks: list[BaseCallback] = []
        checkpoints = None
        if self.run_dir is None:
            model.set_logger(Logger(None, []))
        else:
            formats = ["stdout", "csv"] + (["tensorboard"] if settings.tensorboard_log else [])
            folder = settings.tensorboard_log or str(self.run_dir / "logs")
            suffix = f"_from_{model.num_timesteps}" if resumed else ""  # a resumed run keeps the earlier logs
            model.set_logger(Logger(folder, [make_output_format(f, folder, suffix) for f in formats]))
            checkpoints = ResumableCheckpoint(max(settings.save_freq // n_envs, 1), self.run_dir / "checkpoints")
            callbacks += [checkpoints] if settings.save_freq > 0 else []
            if settings.eval_freq > 0:
                evaluation = EvalCallback(
                    self.make_env(evaluation=True),
                    n_eval_episodes=2,
                    eval_freq=max(settings.eval_freq // n_envs, 1),
                    log_path=str(self.run_dir / "eval"),
                    best_model_save_path=str(self.run_dir / "eval"),
                    verbose=0,
                )
                callbacks.append(evaluation)
        if settings.max_minutes is not None:
            callbacks.append(WallClockLimit(60.0 * settings.max_minutes, settings.verbose, self.group))
        remaining = self.config["n_timesteps"] - model.num_timesteps
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            if remaining > 0:
                model.learn(
                    remaining,
                    callback=CallbackList(callbacks),
                    reset_num_timesteps=not resumed,
                    progress_bar=settings.progress,
                    log_interval=10,
                )
        except KeyboardInterrupt:
            if checkpoints is not None:
                checkpoints.init_callback(model)
                path = checkpoints.save_now()
                print(
                    f"\nInterrupted at step {model.num_timesteps}: saved {path}.\n"
                    f"Continue with: {self.command} --resume {self.run_dir}"
                )
            return False
        except OSError as exc:
            if self.run_dir is None or isinstance(exc, RLNSTError):  # the package's own errors say what to do
                raise
            raise TrainingStoppedError(self.stopped_message(model.num_timesteps, exc)) from exc
        finally:
            model.get_env().close()  # type: ignore[union-attr]
        return True

    def stopped_message(self, steps: int, exc: OSError) -> str:
        """What to tell when an operating-system error (a full disk) stopped training: the step, the error, the
        newest checkpoint (every one present is complete: they are written atomically) and how to continue.

        :param steps: the step training stopped at.
        :param exc: the error.
        """
        assert self.run_dir is not None
        saved = sorted(
            (int(m.group(1)), p.name)
            for p in (self.run_dir / "checkpoints").iterdir()
            if (m := CHECKPOINT_PATTERN.fullmatch(p.name))
        )
        head = f"Training stopped at step {steps}: {one_line(exc)}."
        if not saved:
            return f"{head} No checkpoint was saved before it: start the run again once the cause is fixed."
        return (
            f"{head} The newest checkpoint, {saved[-1][1]}, is complete: once the cause is fixed (e.g. disk space "
            f"freed), continue with: {self.command} --resume {self.run_dir}"
        )

    def finish(self, model: BaseAlgorithm) -> int:
        """:meth:`fit`, then save ``model.zip`` (and for StyleSAC draw ``sequence.png``) in the run folder.

        :param model: the model (new or resumed).
        :return: the exit status (130: interrupted).
        """
        if not self.fit(model):
            return 130
        if self.run_dir is not None:
            save_model(model, self.run_dir / "model.zip")
            if isinstance(model, StyleSAC):
                style = self.config["env_kwargs"].get("style")
                picture = save_sequence_picture(model, self.run_dir / "sequence.png", style=style)
                print(f"Saved {self.run_dir / 'model.zip'} and the stylisation sequence {picture}")
            else:
                print(f"Saved {self.run_dir / 'model.zip'}")
        return 0

    def run(self) -> int:
        """Build the model and train it in this process (a new run's folder is removed when building fails).

        :return: the exit status (130: interrupted).
        """
        with discard_on_error(self.run_dir, new=self.checkpoint is None):
            model = self.build_model()
        return self.finish(model)


@contextmanager
def discard_on_error(run_dir: Path | None, new: bool) -> Iterator[None]:
    """Remove a new run's folder when setting the run up fails (a bad env or hyper-parameter), so that no
    half-made run is left behind; a resumed run's folder is never touched.

    :param run_dir: the run folder.
    :param new: whether this command created it.
    """
    try:
        yield
    except BaseException:
        if new and run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def run_distributed(setup: Callable[[], Experiment], group: ProcessGroup) -> int:
    """One rank of a distributed StyleSAC run (``torchrun ... -m agents.train_sac --distributed``).

    Rank 0 sets the run up as a single process would (``setup()``: run folder, new or resumed model) and sends the
    configuration and settings to the other ranks, which build the same model on their own env(s), seeded
    :meth:`~agents.training.distributed.ProcessGroup.seed`; every rank then takes rank 0's model state and trains
    with its gradients averaged across the ranks (:func:`~agents.training.distributed.replicate`). The number of
    steps counts each rank's env steps (the run makes that many times the ranks in all). Rank 0 alone logs,
    checkpoints (its replay buffer beside each checkpoint), evaluates and writes ``model.zip``; the other ranks
    write nothing, and on a resume start with an empty replay buffer, which their new steps refill.

    :param setup: makes rank 0's :class:`Experiment` (:meth:`Experiment.create` or :meth:`Experiment.resume`).
    :param group: this rank's process group.
    :return: the exit status (130: interrupted).
    """
    if group.is_main:
        with group.setup_on_main():
            experiment = setup()
            with discard_on_error(experiment.run_dir, new=experiment.checkpoint is None):
                model = experiment.build_model()
        group.broadcast((experiment.algo, experiment.config, experiment.settings.to_dict(), experiment.resumed))
    else:
        algo, config, settings, resumed = group.broadcast()
        own = {**config, "seed": group.seed(config["seed"], config["n_envs"])}
        quiet = dataclasses.replace(
            RunSettings.from_dict(settings), device=str(group.device), verbose=0, progress=False
        )
        experiment = Experiment(algo, own, quiet, run_dir=None, resumed=resumed)
        model = experiment.build_model()
        if resumed:
            print(
                f"note: rank {group.rank} starts with an empty replay buffer (rank 0's alone is saved with the "
                f"checkpoints); its new steps refill it.",
                file=sys.stderr,
            )
    experiment.group = group
    replicate(group, model)  # type: ignore[arg-type]
    return experiment.finish(model)
