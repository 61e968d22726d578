"""The experiment behind ``python -m agents.train_sac`` and ``python -m agents.train`` (RL Baselines3 Zoo keeps
its ``exp_manager.py`` apart from ``train.py`` the same way): the run configuration (hyper-parameter file,
``--hyperparams``, flags), the envs, the run folder, the model, fitting with logs, checkpoints, evaluation and
a wall-clock budget. Checkpoint files and resuming: :mod:`agents.checkpoints`; the stylisation sequence picture of a
finished run: :func:`agents.inference.save_sequence_picture`.

- :func:`build_config`, :func:`algorithm_kwargs`: a configuration and the algorithm's constructor arguments in it;
- :func:`prepare_run`: a new run folder (or the one ``--resume`` continues), :func:`make_env`, :func:`make_model`;
- :func:`fit`: train with logs, checkpoints (:class:`~agents.checkpoints.ResumableCheckpoint`), evaluation and
  :class:`WallClockLimit`;
- :func:`run_style_sac`, :func:`run_algorithm`: a whole run of StyleSAC (on several processes with
  ``--distributed``: :func:`run_distributed_style_sac`, :mod:`agents.distributed`), or of any ``--algo``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger, make_output_format
from stable_baselines3.common.noise import (
    ActionNoise,
    NormalActionNoise,
    OrnsteinUhlenbeckActionNoise,
)
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.checkpoints import ResumableCheckpoint, latest_checkpoint, load_checkpoint, save_model
from agents.cli import atomic_path, remove_partial_files
from agents.distributed import ProcessGroup, process_group, replicate
from agents.inference import save_sequence_picture
from agents.networks.pretrained import RLNST_PREFIX, rlnst_style_image_path
from agents.style_sac import StyleSAC

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
HYPERPARAMS_FILE = HYPERPARAMS_DIR / "style_sac.yml"
#: Keys of a run configuration that are not algorithm constructor arguments (``noise_*``: RL Zoo's action noise
#: of TD3-like algorithms, see :mod:`agents.train`).
RUN_KEYS = ("policy", "n_timesteps", "env_kwargs", "n_envs", "algo", "noise_type", "noise_std")
#: Integer hyper-parameters that must be at least 1 (the algorithms do not all check them).
POSITIVE_KEYS = ("buffer_size", "batch_size", "n_steps", "actor_update_interval")
#: ``--algo`` name -> ``"module:Class"`` of the algorithm (imported on use: sb3-contrib is optional).
ALGOS = {
    "style_sac": "agents.style_sac:StyleSAC",
    "sac": "stable_baselines3:SAC",
    "td3": "stable_baselines3:TD3",
    "ppo": "stable_baselines3:PPO",
    "a2c": "stable_baselines3:A2C",
    "tqc": "sb3_contrib:TQC",
}
#: RL Zoo's ``noise_type`` values.
NOISES: dict[str, type[ActionNoise]] = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY:VALUE`` pairs (values parsed as YAML; dotted keys reach nested dicts) into a nested dict."""
    result: dict[str, Any] = {}
    for item in items:
        key, colon, value = item.partition(":")
        if not colon or not all(key.split(".")):
            raise SystemExit(f"--hyperparams expects KEY:VALUE, got {item!r}.")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SystemExit(f"--hyperparams {item!r}: {part} is given a value and also used as a group of keys.")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SystemExit(f"--hyperparams {item!r}: the value is not valid YAML ({exc}).") from exc
    return result


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def hyperparams_key(table: dict[str, Any], env_id: str, policy: str | None, source: Path = HYPERPARAMS_FILE) -> str:
    """The YAML entry to start from: ``ENV/POLICY`` where the file has one for the policy, else ``ENV``.

    :param table: the parsed hyper-parameter file.
    :param env_id: the environment id (``--env``).
    :param policy: the policy alias asked for (``--policy``), if any.
    :param source: the file ``table`` was read from (for the error message).
    """
    if policy and f"{env_id}/{policy}" in table:
        return f"{env_id}/{policy}"
    if env_id not in table:
        raise SystemExit(f"No hyper-parameters for {env_id!r} in {source} (known: {sorted(table)}).")
    return env_id


def pin_single_style(config: dict[str, Any]) -> None:
    """A single-style policy (RL-NST) trains on one style: ``--style``, else the released model's style image.

    :param config: the run configuration; its ``env_kwargs["style"]`` is set in place.
    :raises SystemExit: when no style can be pinned.
    """
    policy_class = StyleSAC.policy_aliases.get(config["policy"])
    if policy_class is None or policy_class.needs_style_image or config["env_kwargs"].get("style"):
        return
    init = config.get("init") or ""
    shipped = None
    if init.startswith(RLNST_PREFIX):
        try:
            shipped = rlnst_style_image_path(init.removeprefix(RLNST_PREFIX))
        except ValueError as exc:
            raise SystemExit(f"--init {init}: {exc}") from exc
    if shipped is None:
        reason = f" ({init} was released without its style image)" if init else ""
        raise SystemExit(f"{config['policy']} trains one model per style: pass --style NAME_OR_PATH{reason}.")
    config["env_kwargs"]["style"] = str(shipped)


def use_released_architecture(config: dict[str, Any]) -> None:
    """``--init`` loads released weights, which need the papers' builder and actor initialisation: turn off
    the from-scratch options ``residual_builder`` and ``initial_log_scale`` of a MiniStylerPolicy config.

    :param config: the run configuration; its ``policy_kwargs`` are changed in place.
    """
    kwargs = config.setdefault("policy_kwargs", {})
    if config.get("init") and config["policy"] == "MiniStylerPolicy" and kwargs.get("residual_builder"):
        print("--init loads the released weights: using the papers' builder (residual_builder: false).")
        kwargs.update(residual_builder=False, initial_log_scale=None)


def build_config(args: argparse.Namespace, hyperparams_file: Path = HYPERPARAMS_FILE) -> dict[str, Any]:
    """Hyper-parameters of ``args.env`` (and ``--policy``) from the YAML file, then the flags on top.

    ``--init rlnst:NAME`` without ``--policy`` selects ``RLNSTPolicy`` unless the env's default policy is
    single-style already (``NSTVideo-v0``); a single-style policy gets its style pinned (:func:`pin_single_style`).

    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :param hyperparams_file: the algorithm's hyper-parameter file (RL Zoo layout: one entry per env id).
    """
    table = yaml.safe_load(hyperparams_file.read_text())
    policy = args.policy
    default_policy = StyleSAC.policy_aliases.get(table.get(args.env, {}).get("policy"))
    single_style_default = not getattr(default_policy, "needs_style_image", True)
    if policy is None and (args.init or "").startswith(RLNST_PREFIX) and not single_style_default:
        policy = "RLNSTPolicy"
    config = merge(table[hyperparams_key(table, args.env, policy, hyperparams_file)], parse_overrides(args.hyperparams))
    flags = {
        "policy": policy,
        "n_timesteps": args.n_timesteps,
        "buffer_size": args.buffer_size,
        "n_envs": args.n_envs,
        "use_amp": args.amp or None,
    }
    config.update({k: v for k, v in flags.items() if v is not None})
    env_kwargs = {
        "image_size": args.image_size,
        "content_dir": args.content_dir,
        "style_dir": args.style_dir,
        "style": args.style,
    }
    config["env_kwargs"] = {**config.get("env_kwargs", {}), **{k: v for k, v in env_kwargs.items() if v is not None}}
    config.setdefault("n_envs", 1)
    config["env_id"], config["seed"], config["init"] = args.env, args.seed, args.init
    pin_single_style(config)
    use_released_architecture(config)
    return config


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


def prepare_run(
    args: argparse.Namespace, algo: str = "style_sac", hyperparams_file: Path = HYPERPARAMS_FILE
) -> tuple[dict[str, Any], Path, Path | None]:
    """The configuration and run folder of a new run, or of the run ``--resume`` continues.

    A new run gets ``<log folder>/<algo>_<env>_<k>/`` with its ``config.yml`` (recording ``algo``); a resumed
    run keeps its folder and configuration (``-n`` sets a new total step count).

    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :param algo: the algorithm's name (run folder prefix, recorded in the configuration).
    :param hyperparams_file: the algorithm's hyper-parameter file.
    :return: the configuration, the run folder, and the checkpoint to resume from (``None`` for a new run).
    """
    if args.resume:
        checkpoint = latest_checkpoint(Path(args.resume))
        run_dir = checkpoint.parent.parent
        try:
            config = yaml.safe_load((run_dir / "config.yml").read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(
                f"--resume {args.resume}: expected {checkpoint.name} in RUN_DIR/checkpoints/ of a run "
                f"with its RUN_DIR/config.yml, but {run_dir / 'config.yml'} cannot be read ({exc})."
            ) from exc
        if not isinstance(config, dict) or "env_id" not in config:
            raise SystemExit(f"--resume {args.resume}: {run_dir / 'config.yml'} is not a run configuration.")
        if config.get("algo", "style_sac") != algo:
            raise SystemExit(f"{run_dir} was trained with {config.get('algo', 'style_sac')}, not {algo}.")
        remove_partial_files(run_dir / "checkpoints")
        if args.n_timesteps is not None:
            config["n_timesteps"] = args.n_timesteps
            write_config(run_dir, config)
        return config, run_dir, checkpoint
    config = {**build_config(args, hyperparams_file), "algo": algo}
    run_dir = claim_run_dir(Path(args.log_folder), args.env, algo)
    (run_dir / "checkpoints").mkdir()
    write_config(run_dir, config)
    return config, run_dir, None


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``run_dir/config.yml`` atomically.

    :param run_dir: the run folder.
    :param config: the run configuration.
    """
    with atomic_path(run_dir / "config.yml") as partial:
        partial.write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def discard_on_error(run_dir: Path, new: bool) -> Iterator[None]:
    """Remove a new run's folder when setting the run up fails (a bad env or hyper-parameter), so that no
    half-made run is left behind; a resumed run's folder is never touched.

    :param run_dir: the run folder.
    :param new: whether this command created it.
    """
    try:
        yield
    except BaseException:
        if new:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def make_env(config: dict[str, Any], run_dir: Path | None, device: str, resume: bool, seed_offset: int = 0) -> VecEnv:
    """The vectorised training or evaluation env of a run, monitored into the run folder.

    :param config: the run configuration (``env_id``, ``env_kwargs``, ``n_envs``, ``seed``).
    :param run_dir: the run folder, whose ``monitor/`` (training) or ``eval/`` gets the Monitor files (``None``:
        no Monitor files, as on the ranks other than 0 of a distributed run).
    :param device: where the env's VGG-19 runs.
    :param resume: keep the existing Monitor files (append to them).
    :param seed_offset: added to the seed; non-zero makes the single evaluation env.
    """
    n_envs = config["n_envs"] if seed_offset == 0 else 1
    env_id = config["env_id"] if ":" in config["env_id"] else f"nst_env:{config['env_id']}"  # registers in workers
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=config["seed"] + seed_offset,
        env_kwargs={**config["env_kwargs"], "device": device},
        monitor_dir=str(run_dir / ("monitor" if seed_offset == 0 else "eval")) if run_dir is not None else None,
        monitor_kwargs={"override_existing": not resume},
        vec_env_cls=SubprocVecEnv if n_envs > 1 else DummyVecEnv,
    )


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The algorithm class of an ``--algo`` name.

    :param name: a key of :data:`ALGOS`.
    :raises SystemExit: an unknown name, or sb3-contrib missing for ``tqc``.
    """
    if name not in ALGOS:
        raise SystemExit(f"Unknown algorithm {name!r}; expected one of {sorted(ALGOS)}.")
    module, cls = ALGOS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise SystemExit(f"--algo {name} needs {module}: pip install 'rl-nst[bench]' ({exc}).") from exc


def action_noise(config: dict[str, Any], action_space: spaces.Box) -> ActionNoise | None:
    """RL Zoo's ``noise_type`` / ``noise_std`` entries as an SB3 action noise (``None`` without them).

    :param config: the run configuration.
    :param action_space: the env's action space (the noise has its shape).
    """
    kind = config.get("noise_type")
    if kind is None:
        return None
    if kind not in NOISES:
        raise SystemExit(f"Unknown noise_type {kind!r}; expected one of {sorted(NOISES)}.")
    shape = action_space.shape
    return NOISES[kind](mean=np.zeros(shape), sigma=np.full(shape, float(config.get("noise_std", 0.1))))


def algorithm_kwargs(config: dict[str, Any], algo_class: type[BaseAlgorithm] = StyleSAC) -> dict[str, Any]:
    """The constructor arguments of ``algo_class`` in a run configuration (every key but the run's own): the one
    filter of the training commands and the benchmarks.

    :param config: the run configuration (hyper-parameter file + ``--hyperparams`` + flags).
    :param algo_class: the algorithm (default StyleSAC).
    :raises SystemExit: a key the algorithm does not take.
    """
    kwargs = {k: v for k, v in config.items() if k not in (*RUN_KEYS, "env_id", "seed", "init")}
    accepted = set(inspect.signature(algo_class.__init__).parameters) - {
        "self",
        "policy",
        "env",
        "seed",
        "device",
        "verbose",
        "_init_setup_model",
    }
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise SystemExit(
            f"Unknown hyper-parameter {', '.join(unknown)} for {algo_class.__name__} (--hyperparams or "
            f"the hyper-parameter file); expected one of: {', '.join(sorted(accepted | set(RUN_KEYS)))}."
        )
    for key in POSITIVE_KEYS:
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SystemExit(f"Hyper-parameter {key} must be an integer >= 1, got {value!r}.")
    return kwargs


def make_model(
    algo_class: type[BaseAlgorithm], config: dict[str, Any], env: VecEnv, args: argparse.Namespace, **extra: Any
) -> BaseAlgorithm:
    """A new model of ``algo_class`` from a run configuration.

    :param algo_class: the algorithm.
    :param config: the run configuration.
    :param env: the training env.
    :param args: the parsed command line (``device``, ``verbose``).
    :param extra: further constructor arguments (e.g. an action noise).
    :raises SystemExit: an unknown hyper-parameter, or a value the algorithm or its policy refuses.
    """
    kwargs = {**algorithm_kwargs(config, algo_class), **extra}
    try:
        return algo_class(
            config["policy"], env, seed=config["seed"], device=args.device, verbose=args.verbose, **kwargs
        )
    except (TypeError, ValueError, KeyError, AssertionError) as exc:  # SB3 checks some values with assert
        raise SystemExit(
            f"The hyper-parameters do not fit {algo_class.__name__} ({type(exc).__name__}: {exc}); "
            f"check --hyperparams and the hyper-parameter file."
        ) from exc


class WallClockLimit(BaseCallback):
    """Stop training once a wall-clock budget is spent (``--max-minutes``): ``learn`` then returns as after its
    last step, so the run ends like a finished one (``model.zip``, ``sequence.png``).

    The clock starts when learning starts (after the envs and the model are built); the step in progress when
    the budget runs out is finished first.

    In a distributed run the ranks stop together, at the first step at which any rank's budget is spent (one
    tiny all-reduce per env step), since they must make the same updates.

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


def fit(
    model: BaseAlgorithm,
    config: dict[str, Any],
    run_dir: Path | None,
    args: argparse.Namespace,
    command: str,
    group: ProcessGroup | None = None,
) -> bool:
    """Train to ``config["n_timesteps"]`` (or until ``--max-minutes`` are spent: :class:`WallClockLimit`) with
    logs, checkpoints and evaluation; Ctrl-C or SIGTERM saves a checkpoint and prints the resume command. The
    env is closed at the end. In a distributed run only rank 0 logs, checkpoints and evaluates.

    :param model: the model (new or resumed).
    :param config: the run configuration.
    :param run_dir: the run folder (``None`` on the ranks other than 0 of a distributed run).
    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :param command: the training command, for the resume hint (e.g. ``python -m agents.train_sac``).
    :param group: the process group of a distributed run (``None``: a single process).
    :return: ``False`` when interrupted.
    """
    callbacks: list[BaseCallback] = []
    checkpoints = None
    if run_dir is None:
        model.set_logger(Logger(None, []))
    else:
        formats = ["stdout", "csv"] + (["tensorboard"] if args.tensorboard_log else [])
        folder = str(run_dir / "logs") if not args.tensorboard_log else args.tensorboard_log
        suffix = f"_from_{model.num_timesteps}" if args.resume else ""  # a resumed run keeps the earlier logs
        model.set_logger(Logger(folder, [make_output_format(f, folder, suffix) for f in formats]))
        checkpoints = ResumableCheckpoint(max(args.save_freq // config["n_envs"], 1), run_dir / "checkpoints")
        callbacks += [checkpoints] if args.save_freq > 0 else []
        if args.eval_freq > 0:
            eval_env = make_env(config, run_dir, args.device, resume=bool(args.resume), seed_offset=1000)
            callbacks.append(
                EvalCallback(
                    eval_env,
                    n_eval_episodes=2,
                    eval_freq=max(args.eval_freq // config["n_envs"], 1),
                    log_path=str(run_dir / "eval"),
                    best_model_save_path=str(run_dir / "eval"),
                    verbose=0,
                )
            )
    if args.max_minutes is not None:
        callbacks.append(WallClockLimit(60.0 * args.max_minutes, verbose=args.verbose, group=group))
    remaining = config["n_timesteps"] - model.num_timesteps
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if remaining > 0:
            model.learn(
                remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=not args.resume,
                progress_bar=not args.no_progress,
                log_interval=10,
            )
    except KeyboardInterrupt:
        if checkpoints is not None:
            checkpoints.init_callback(model)
            path = checkpoints.save_now()
            print(
                f"\nInterrupted at step {model.num_timesteps}: saved {path}.\n"
                f"Continue with: {command} --resume {run_dir}"
            )
        return False
    finally:
        model.get_env().close()  # type: ignore[union-attr]
    return True


def style_sac_model(
    config: dict[str, Any], run_dir: Path, checkpoint: Path | None, args: argparse.Namespace
) -> StyleSAC:
    """A run's StyleSAC on its env: a new one (from ``--init``'s released weights if asked), or the checkpoint's.

    :param config: the run configuration.
    :param run_dir: the run folder.
    :param checkpoint: the checkpoint to resume from (``None``: a new model).
    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :raises SystemExit: a model that cannot be built or loaded as asked.
    """
    env = make_env(config, run_dir, args.device, resume=checkpoint is not None)
    if checkpoint is not None:
        return load_checkpoint(StyleSAC, checkpoint, env, args.device)  # type: ignore[return-value]
    model = make_model(StyleSAC, config, env, args)
    if config.get("init"):
        try:
            model.load_pretrained(config["init"])  # type: ignore[attr-defined]
        except (FileNotFoundError, ValueError) as exc:
            raise SystemExit(f"--init {config['init']} does not fit {config['policy']}: {exc}") from exc
    return model  # type: ignore[return-value]


def train_style_sac(
    model: StyleSAC,
    config: dict[str, Any],
    run_dir: Path | None,
    args: argparse.Namespace,
    group: ProcessGroup | None = None,
) -> int:
    """:func:`fit` a StyleSAC, then save ``model.zip`` and draw ``sequence.png`` in the run folder; return the
    exit status (130: interrupted).

    :param model: the model (new or resumed).
    :param config: the run configuration.
    :param run_dir: the run folder (``None``: nothing is written, as on the ranks other than 0).
    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :param group: the process group of a distributed run (``None``: a single process).
    """
    if not fit(model, config, run_dir, args, "python -m agents.train_sac", group):
        return 130
    if run_dir is not None:
        save_model(model, run_dir / "model.zip")
        picture = save_sequence_picture(model, run_dir / "sequence.png", style=config["env_kwargs"].get("style"))
        print(f"Saved {run_dir / 'model.zip'} and the stylisation sequence {picture}")
    return 0


def run_style_sac(args: argparse.Namespace) -> int:
    """Train StyleSAC as ``args`` say (:func:`agents.train_sac.build_parser`); return the exit status (130:
    interrupted). ``--distributed``: this process is one rank of a torchrun launch
    (:func:`run_distributed_style_sac`)."""
    torch.set_flush_denormal(True)  # denormal floats slow CPU convolutions down by up to 2x
    if args.distributed:
        with process_group(args.device, args.dist_timeout) as group:
            return run_distributed_style_sac(args, group)
    config, run_dir, checkpoint = prepare_run(args)
    with discard_on_error(run_dir, new=checkpoint is None):
        model = style_sac_model(config, run_dir, checkpoint, args)
    return train_style_sac(model, config, run_dir, args)


def run_distributed_style_sac(args: argparse.Namespace, group: ProcessGroup) -> int:
    """One rank of a distributed StyleSAC run (``torchrun ... -m agents.train_sac --distributed``).

    Rank 0 sets the run up as a single process would (run folder, new or resumed model) and sends the
    configuration to the other ranks, which build the same model on their own env(s), seeded
    :meth:`~agents.distributed.ProcessGroup.seed`; every rank then takes rank 0's model state and trains with its
    gradients averaged across the ranks (:func:`~agents.distributed.replicate`); ``-n`` counts each
    rank's env steps (SB3's ``num_timesteps``: the run makes ``-n`` x ranks in all). Rank 0 alone logs,
    checkpoints (its replay buffer beside each checkpoint), evaluates and writes ``model.zip``; the other ranks
    write nothing, and on ``--resume`` start with an empty replay buffer, which their new steps refill.

    :param args: the parsed command line (:func:`agents.train_sac.build_parser`).
    :param group: this rank's process group.
    :return: the exit status (130: interrupted).
    """
    args = argparse.Namespace(**{**vars(args), "device": str(group.device)})
    if group.is_main:
        with group.setup_on_main():
            config, run_dir, checkpoint = prepare_run(args)
            with discard_on_error(run_dir, new=checkpoint is None):
                model = style_sac_model(config, run_dir, checkpoint, args)
        group.broadcast(config)
    else:
        config = group.broadcast()
        args = argparse.Namespace(**{**vars(args), "verbose": 0, "no_progress": True})
        own = {**config, "seed": group.seed(config["seed"], config["n_envs"])}
        model = make_model(StyleSAC, own, make_env(own, None, args.device, resume=False), args)  # type: ignore[assignment]
        run_dir = None
        if args.resume:
            print(
                f"note: rank {group.rank} starts with an empty replay buffer (rank 0's alone is saved with the "
                f"checkpoints); its new steps refill it.",
                file=sys.stderr,
            )
    replicate(group, model)
    return train_style_sac(model, config, run_dir, args, group)


def run_algorithm(args: argparse.Namespace) -> int:
    """Train ``args.algo`` as ``args`` say; return the exit status (130: interrupted).

    :param args: :func:`agents.train_sac.build_parser`'s arguments plus ``algo``.
    """
    if args.algo == "style_sac":
        return run_style_sac(args)
    if args.amp or args.init or args.distributed:
        raise SystemExit("--amp, --init and --distributed are StyleSAC options (--algo style_sac).")
    algo_class = algorithm_class(args.algo)
    torch.set_flush_denormal(True)
    config, run_dir, checkpoint = prepare_run(args, args.algo, HYPERPARAMS_DIR / f"{args.algo}.yml")
    with discard_on_error(run_dir, new=checkpoint is None):
        env = make_env(config, run_dir, args.device, resume=checkpoint is not None)
        if checkpoint is not None:
            model = load_checkpoint(algo_class, checkpoint, env, args.device)
        else:
            noise = action_noise(config, env.action_space)  # type: ignore[arg-type]
            model = make_model(algo_class, config, env, args, **({"action_noise": noise} if noise is not None else {}))
    if not fit(model, config, run_dir, args, f"python -m agents.train --algo {args.algo}"):
        return 130
    save_model(model, run_dir / "model.zip")
    print(f"Saved {run_dir / 'model.zip'}")
    return 0
