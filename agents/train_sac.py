"""Train StyleSAC on NST-v0: ``python -m agents.train_sac`` (flags in the style of RL Baselines3 Zoo).

With no arguments it trains a MiniStylerPolicy on the built-in sample images at 64 px (a few minutes on a
laptop CPU, with a progress bar). ``--policy RLNSTPolicy --style NAME_OR_PATH`` trains an RL-NST single-style
model instead (the env then pins the style, observes the content photo and rewards the Gram style loss, from
the ``NST-v0/RLNSTPolicy`` entry of the hyper-parameter file). Either writes a run folder::

    runs/style_sac_NST-v0_1/
        model.zip           the trained model (StyleSAC.load)
        config.yml          the effective configuration (hyper-parameters, env kwargs, seed, ...)
        monitor/0.monitor.csv  episode rewards and lengths (SB3 Monitor)
        logs/progress.csv   training metrics (critic loss, temperature, content/style losses, ...); a resumed
                            run adds logs/progress_from_<step>.csv
        checkpoints/        rl_model_<steps>_steps.zip, each with its replay_buffer_<steps>_steps.pkl (the
                            buffers of the newest 2 checkpoints are kept), for --resume
        eval/               EvalCallback results (evaluations.npz) and the best model
        sequence.png        the 1..10 stylisation sequence on fixed evaluation pairs

Interrupting (Ctrl-C or SIGTERM) saves a checkpoint first; ``--resume RUN_DIR`` continues with the same step
count. Checkpoints and the model are written atomically (a temporary file renamed once complete), so a
SIGKILL at any moment loses at most the work since the last complete checkpoint (``--save-freq``).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import pickle
import re
import shutil
import signal
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger, make_output_format
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.cli import atomic_path, cli_main, device_name, float_range, int_range, remove_partial_files
from agents.inference import sequence_grid, stylize_sequence
from agents.networks.pretrained import rlnst_style_image_path
from agents.style_sac import StyleSAC
from agents.style_sac.policies import RLNST_PREFIX
from nst_env.images import load_image
from nst_env.style_transfer import resolve_sample

HYPERPARAMS_FILE = Path(__file__).parent / "hyperparams" / "style_sac.yml"
#: Fixed (content, style) pairs of the built-in samples used for the sequence picture.
EVAL_PAIRS = (("chelsea", "starry_night"), ("astronaut", "the_scream"), ("building", "great_wave"))
#: Keys of a run configuration that are not algorithm constructor arguments (``noise_*``: RL Zoo's action noise
#: of TD3-like algorithms, see :mod:`agents.train`).
RUN_KEYS = ("policy", "n_timesteps", "env_kwargs", "n_envs", "algo", "noise_type", "noise_std")
#: ``--image-size`` bounds: NSTEnv's smallest (relu4_* features are image_size/8 wide) and a side whose replay
#: buffer of a few thousand images already needs tens of GB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
#: Integer hyper-parameters that must be at least 1 (the algorithms do not all check them).
POSITIVE_KEYS = ("buffer_size", "batch_size", "n_steps", "actor_update_interval")


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

    :param args: the parsed command line (:func:`build_parser`).
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
    env_kwargs = {"image_size": args.image_size, "content_dir": args.content_dir, "style_dir": args.style_dir,
                  "style": args.style}
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


def make_env(config: dict[str, Any], run_dir: Path, device: str, resume: bool, seed_offset: int = 0) -> VecEnv:
    """The (monitored) vectorised training or evaluation env of a run."""
    n_envs = config["n_envs"] if seed_offset == 0 else 1
    env_id = config["env_id"] if ":" in config["env_id"] else f"nst_env:{config['env_id']}"  # registers in workers
    return make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=config["seed"] + seed_offset,
        env_kwargs={**config["env_kwargs"], "device": device},
        monitor_dir=str(run_dir / ("monitor" if seed_offset == 0 else "eval")),
        monitor_kwargs={"override_existing": not resume},
        vec_env_cls=SubprocVecEnv if n_envs > 1 else DummyVecEnv,
    )


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
        """Write ``rl_model_<steps>_steps.zip`` and its ``replay_buffer_<steps>_steps.pkl``; return the model path."""
        path = Path(self._checkpoint_path(extension="zip"))
        path.unlink(missing_ok=True)
        if isinstance(self.model, OffPolicyAlgorithm):
            with atomic_path(buffer_path(path)) as partial:
                self.model.save_replay_buffer(partial)
        save_model(self.model, path)
        self.prune_buffers()
        return path

    def prune_buffers(self) -> None:
        """Delete the replay buffers of all but the newest :attr:`keep_buffers` checkpoints (and orphans)."""
        folder = Path(self.save_path)
        steps = sorted((int(m.group(1)) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.fullmatch(p.name))),
                       reverse=True)
        keep = set(steps[: self.keep_buffers])
        for buffer in folder.iterdir():
            if (m := BUFFER_PATTERN.fullmatch(buffer.name)) and int(m.group(1)) not in keep:
                buffer.unlink(missing_ok=True)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_now()
        return True


class WallClockLimit(BaseCallback):
    """Stop training once a wall-clock budget is spent (``--max-minutes``): ``learn`` then returns as after its
    last step, so the run ends like a finished one (``model.zip``, ``sequence.png``).

    The clock starts when learning starts (after the envs and the model are built); the step in progress when
    the budget runs out is finished first.

    :param seconds: the training budget in seconds.
    :param verbose: 1 prints the step at which the budget stopped training.
    """

    def __init__(self, seconds: float, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.seconds = seconds
        self.deadline = 0.0

    def _on_training_start(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def _on_step(self) -> bool:
        if time.monotonic() < self.deadline:
            return True
        if self.verbose >= 1:
            print(f"Time budget of {self.seconds / 60:g} min spent: stopping at step {self.num_timesteps}.")
        return False


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
    :raises SystemExit: no such file or folder, a damaged zip given explicitly, or no complete checkpoint.
    """
    if path.is_file():
        problem = checkpoint_problem(path)
        if problem:
            raise SystemExit(f"--resume {path}: cannot resume from it, it is {problem}.")
        return path
    if not path.is_dir():
        raise SystemExit(f"--resume {path}: no such run folder or checkpoint zip.")
    folder = path / "checkpoints"
    found = sorted(((int(m.group(1)), p) for p in (folder.iterdir() if folder.is_dir() else [])
                    if (m := CHECKPOINT_PATTERN.fullmatch(p.name))), reverse=True)
    for _, checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        print(f"warning: skipping {checkpoint}: it is {problem}.", file=sys.stderr)
    reason = "none of them is complete" if found else "there is none"
    raise SystemExit(f"--resume {path}: expected a run folder with checkpoints/rl_model_<steps>_steps.zip, but {reason}.")


def save_sequence_picture(
    model: StyleSAC, path: Path, steps: int = 10, side: int = 256, style: str | None = None
) -> Path:
    """The 1..``steps`` sequence of the fixed evaluation pairs as one labelled grid PNG.

    :param model: the trained model.
    :param path: the PNG to write.
    :param steps: stylisation steps (columns after content and style).
    :param side: longest side of the images processed.
    :param style: the style the model was trained on, when pinned (single-style training): it replaces the
        evaluation pairs' styles.
    """
    rows = []
    for content, pair_style in EVAL_PAIRS:
        c = load_image(resolve_sample(content), max_side=side)
        s = load_image(resolve_sample(style or pair_style), max_side=side)
        rows.append((c, s, stylize_sequence(model.policy, c, s, steps)))
    with atomic_path(path) as partial:
        sequence_grid(rows).save(partial)
    return path


def build_parser(description: str = __doc__.split("\n")[0]) -> argparse.ArgumentParser:
    """The training command line (shared with :mod:`agents.train`, which adds ``--algo``).

    :param description: the ``--help`` header.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="NST-v0", help="environment id")
    p.add_argument("--policy", default=None, help="policy alias (default from the hyper-parameter file)")
    p.add_argument("-n", "--n-timesteps", type=int_range(1), default=None, help="env steps to train for")
    p.add_argument("--image-size", type=int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), default=None,
                   help="training image side in px")
    p.add_argument("--content-dir", default=None, help="folder of content photos (recursive), e.g. MS-COCO")
    p.add_argument("--style-dir", default=None, help="folder of style images (recursive), e.g. WikiArt")
    p.add_argument("--style", default=None, help="pin one style (path or built-in name): single-style training")
    p.add_argument("--n-envs", type=int_range(1, 256), default=None, help="parallel envs (SubprocVecEnv when > 1)")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("-f", "--log-folder", default="runs", help="where run folders are created")
    p.add_argument("--tensorboard-log", default=None, help="also log to TensorBoard in this folder")
    p.add_argument("--save-freq", type=int_range(0), default=500, help="checkpoint every N env steps (0: never)")
    p.add_argument("--eval-freq", type=int_range(0), default=500, help="evaluate every N env steps (0: never)")
    p.add_argument("--buffer-size", type=int_range(1), default=None, help="replay buffer capacity")
    p.add_argument("--max-minutes", type=float_range(0.0), default=None,
                   help="stop training after this many minutes of wall-clock time (then save and finish as "
                        "usual; -n stays the upper bound)")
    p.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY:VALUE",
                   help="override hyper-parameters, e.g. batch_size:16 policy_kwargs.actor_lr_ratio:0.2")
    p.add_argument("--init", default=None,
                   help="start actor+builder from released weights: rlministyler, or rlnst:blue_swirls "
                        "(fire, maxresdefault; selects RLNSTPolicy and, unless --style is given, its style)")
    p.add_argument("--resume", default=None,
                   help="run folder or checkpoint zip to continue from (with -n: a new total step count)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", type=int_range(0, 2), default=1)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``python -m agents.train_sac``'s arguments (:func:`build_parser`)."""
    return build_parser().parse_args(argv)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def prepare_run(
    args: argparse.Namespace, algo: str = "style_sac", hyperparams_file: Path = HYPERPARAMS_FILE
) -> tuple[dict[str, Any], Path, Path | None]:
    """The configuration and run folder of a new run, or of the run ``--resume`` continues.

    A new run gets ``<log folder>/<algo>_<env>_<k>/`` with its ``config.yml`` (recording ``algo``); a resumed
    run keeps its folder and configuration (``-n`` sets a new total step count).

    :param args: the parsed command line (:func:`build_parser`).
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
            raise SystemExit(f"--resume {args.resume}: expected {checkpoint.name} in RUN_DIR/checkpoints/ of a run "
                             f"with its RUN_DIR/config.yml, but {run_dir / 'config.yml'} cannot be read ({exc}).") from exc
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
    run_dir = next_run_dir(Path(args.log_folder), args.env, algo)
    (run_dir / "checkpoints").mkdir(parents=True)
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


def algorithm_kwargs(config: dict[str, Any], algo_class: type[BaseAlgorithm]) -> dict[str, Any]:
    """The constructor arguments of ``algo_class`` in a run configuration (every key but the run's own).

    :param config: the run configuration (hyper-parameter file + ``--hyperparams`` + flags).
    :param algo_class: the algorithm.
    :raises SystemExit: a key the algorithm does not take.
    """
    kwargs = {k: v for k, v in config.items() if k not in (*RUN_KEYS, "env_id", "seed", "init")}
    accepted = set(inspect.signature(algo_class.__init__).parameters) - {"self", "policy", "env", "seed", "device",
                                                                           "verbose", "_init_setup_model"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise SystemExit(f"Unknown hyper-parameter {', '.join(unknown)} for {algo_class.__name__} (--hyperparams or "
                         f"the hyper-parameter file); expected one of: {', '.join(sorted(accepted | set(RUN_KEYS)))}.")
    for key in POSITIVE_KEYS:
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SystemExit(f"Hyper-parameter {key} must be an integer >= 1, got {value!r}.")
    return kwargs


def make_model(algo_class: type[BaseAlgorithm], config: dict[str, Any], env: VecEnv, args: argparse.Namespace,
               **extra: Any) -> BaseAlgorithm:
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
        return algo_class(config["policy"], env, seed=config["seed"], device=args.device, verbose=args.verbose,
                          **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:  # SB3 checks some values with assert
        raise SystemExit(f"The hyper-parameters do not fit {algo_class.__name__} ({type(exc).__name__}: {exc}); "
                         f"check --hyperparams and the hyper-parameter file.") from exc


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
        raise SystemExit(f"--resume: cannot load {checkpoint} as a {algo_class.__name__} model for this run "
                         f"({type(exc).__name__}: {exc}).") from exc
    print(f"Resuming {checkpoint.parent.parent} from {checkpoint.name} at step {model.num_timesteps}.")
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
    if not buffer.is_file() and legacy.is_file() and newest == checkpoint and legacy.stat().st_mtime >= checkpoint.stat().st_mtime:
        buffer = legacy
    if buffer.is_file():
        try:
            model.load_replay_buffer(buffer)
            print(f"Replay buffer: {buffer.name}, {model.replay_buffer.size()} transitions.")
            return
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError) as exc:
            print(f"warning: {buffer} cannot be read ({type(exc).__name__}: {exc}).", file=sys.stderr)
    print(f"note: no replay buffer saved with {checkpoint.name}: the buffer starts empty and is refilled by the "
          f"new steps.", file=sys.stderr)


def fit(model: BaseAlgorithm, config: dict[str, Any], run_dir: Path, args: argparse.Namespace, command: str) -> bool:
    """Train to ``config["n_timesteps"]`` (or until ``--max-minutes`` are spent: :class:`WallClockLimit`) with
    logs, checkpoints and evaluation; Ctrl-C or SIGTERM saves a checkpoint and prints the resume command. The
    env is closed at the end.

    :param model: the model (new or resumed).
    :param config: the run configuration.
    :param run_dir: the run folder.
    :param args: the parsed command line (:func:`build_parser`).
    :param command: the training command, for the resume hint (e.g. ``python -m agents.train_sac``).
    :return: ``False`` when interrupted.
    """
    formats = ["stdout", "csv"] + (["tensorboard"] if args.tensorboard_log else [])
    folder = str(run_dir / "logs") if not args.tensorboard_log else args.tensorboard_log
    suffix = f"_from_{model.num_timesteps}" if args.resume else ""  # a resumed run keeps the earlier logs
    model.set_logger(Logger(folder, [make_output_format(f, folder, suffix) for f in formats]))
    checkpoints = ResumableCheckpoint(max(args.save_freq // config["n_envs"], 1), run_dir / "checkpoints")
    callbacks: list[BaseCallback] = [checkpoints] if args.save_freq > 0 else []
    if args.max_minutes is not None:
        callbacks.append(WallClockLimit(60.0 * args.max_minutes, verbose=args.verbose))
    if args.eval_freq > 0:
        eval_env = make_env(config, run_dir, args.device, resume=bool(args.resume), seed_offset=1000)
        callbacks.append(EvalCallback(eval_env, n_eval_episodes=2, eval_freq=max(args.eval_freq // config["n_envs"], 1),
                                      log_path=str(run_dir / "eval"), best_model_save_path=str(run_dir / "eval"),
                                      verbose=0))
    remaining = config["n_timesteps"] - model.num_timesteps
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if remaining > 0:
            model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=not args.resume,
                        progress_bar=not args.no_progress, log_interval=10)
    except KeyboardInterrupt:
        checkpoints.init_callback(model)
        path = checkpoints.save_now()
        print(f"\nInterrupted at step {model.num_timesteps}: saved {path}.\n"
              f"Continue with: {command} --resume {run_dir}")
        return False
    finally:
        model.get_env().close()  # type: ignore[union-attr]
    return True


def run(args: argparse.Namespace) -> int:
    """Train StyleSAC as ``args`` say (:func:`build_parser`); return the exit status (130: interrupted)."""
    torch.set_flush_denormal(True)  # denormal floats slow CPU convolutions down by up to 2x
    config, run_dir, checkpoint = prepare_run(args)
    with discard_on_error(run_dir, new=checkpoint is None):
        env = make_env(config, run_dir, args.device, resume=checkpoint is not None)
        if checkpoint is not None:
            model = load_checkpoint(StyleSAC, checkpoint, env, args.device)
        else:
            model = make_model(StyleSAC, config, env, args)
            if config.get("init"):
                try:
                    model.load_pretrained(config["init"])
                except (FileNotFoundError, ValueError) as exc:
                    raise SystemExit(f"--init {config['init']} does not fit {config['policy']}: {exc}") from exc
    if not fit(model, config, run_dir, args, "python -m agents.train_sac"):
        return 130
    save_model(model, run_dir / "model.zip")
    picture = save_sequence_picture(model, run_dir / "sequence.png", style=config["env_kwargs"].get("style"))
    print(f"Saved {run_dir / 'model.zip'} and the stylisation sequence {picture}")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.train_sac``: parse the command line and train (:func:`run`); bad input ends it with a
    one-line error and exit status 2 (:func:`agents.cli.cli_main`)."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
