"""A run's configuration: the hyper-parameter file (one entry per env id, RL Baselines3 Zoo's layout), the overrides
on top of it, the algorithm's constructor arguments in it (:func:`build_config`, :func:`algorithm_kwargs`), and the
run's own settings, which are not hyper-parameters (:class:`RunSettings`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import (
    ActionNoise,
    NormalActionNoise,
    OrnsteinUhlenbeckActionNoise,
)

from agents.errors import ConfigError
from agents.networks.pretrained import RLNST_PREFIX, rlnst_style_image_path
from agents.style_sac import StyleSAC

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
HYPERPARAMS_FILE = HYPERPARAMS_DIR / "style_sac.yml"
#: Keys of a run configuration that are not algorithm constructor arguments (``noise_*``: RL Zoo's action noise
#: of TD3-like algorithms, see :mod:`agents.train`).
#: ``--init`` value that trains from scratch where the hyper-parameter file names released weights.
NO_INIT = "none"
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
#: How a run's ``n_envs > 1`` envs run (:attr:`RunSettings.vec_env`, :func:`agents.training.experiment.make_env`).
VEC_ENVS = ("batched", "subproc", "dummy")
#: RL Zoo's ``noise_type`` values.
NOISES: dict[str, type[ActionNoise]] = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY:VALUE`` pairs (values parsed as YAML; dotted keys reach nested dicts) into a nested dict."""
    result: dict[str, Any] = {}
    for item in items:
        key, colon, value = item.partition(":")
        if not colon or not all(key.split(".")):
            raise ConfigError(f"--hyperparams expects KEY:VALUE, got {item!r}.")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--hyperparams {item!r}: {part} is given a value and also used as a group of keys.")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--hyperparams {item!r}: the value is not valid YAML ({exc}).") from exc
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
        raise ConfigError(f"No hyper-parameters for {env_id!r} in {source} (known: {sorted(table)}).")
    return env_id


def pin_single_style(config: dict[str, Any]) -> None:
    """A single-style policy (RL-NST) trains on one style: ``--style``, else the released model's style image.

    :param config: the run configuration; its ``env_kwargs["style"]`` is set in place.
    :raises ConfigError: when no style can be pinned.
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
            raise ConfigError(f"--init {init}: {exc}") from exc
    if shipped is None:
        reason = f" ({init} was released without its style image)" if init else ""
        raise ConfigError(f"{config['policy']} trains one model per style: pass --style NAME_OR_PATH{reason}.")
    config["env_kwargs"]["style"] = str(shipped)


def use_released_architecture(config: dict[str, Any]) -> None:
    """``--init`` loads released weights, which need the papers' builder and actor initialisation: turn off
    the from-scratch options ``residual_builder`` and ``initial_log_scale`` of a MiniStylerPolicy config.

    :param config: the run configuration; its ``policy_kwargs`` are changed in place.
    """
    kwargs = config.setdefault("policy_kwargs", {})
    if not isinstance(kwargs, dict):  # the algorithm refuses it with one line (algorithm_kwargs)
        return
    if config.get("init") and config["policy"] == "MiniStylerPolicy" and kwargs.get("residual_builder"):
        print("--init loads the released weights: using the papers' builder (residual_builder: false).")
        kwargs.update(residual_builder=False, initial_log_scale=None)


def build_config(
    env_id: str = "NST-v0",
    *,
    policy: str | None = None,
    overrides: Sequence[str] = (),
    n_timesteps: int | None = None,
    n_envs: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    init: str | None = None,
    hyperparams_file: Path = HYPERPARAMS_FILE,
) -> dict[str, Any]:
    """Hyper-parameters of ``env_id`` (and ``policy``) from the YAML file, then the overrides and arguments on top.

    ``init="rlnst:NAME"`` without ``policy`` selects ``RLNSTPolicy`` unless the env's default policy is
    single-style already (``NSTVideo-v0``); a single-style policy gets its style pinned (:func:`pin_single_style`).

    :param env_id: the environment id.
    :param policy: the policy alias (``None``: the file's).
    :param overrides: ``KEY:VALUE`` hyper-parameters (:func:`parse_overrides`).
    :param n_timesteps: env steps to train for (``None``: the file's).
    :param n_envs: parallel envs (``None``: the file's, else 1).
    :param env_kwargs: env arguments on top of the file's (``None`` values are left out).
    :param seed: the run's seed.
    :param init: released weights to start the actor and builder from (``rlministyler``, ``rlnst:NAME``, ...;
        ``None``: the file's ``init`` where the entry's policy is used; ``"none"``: from scratch).
    :param hyperparams_file: the algorithm's hyper-parameter file.
    :raises ConfigError: an entry, override or style that cannot be used.
    """
    try:
        table = yaml.safe_load(Path(hyperparams_file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the hyper-parameter file {hyperparams_file} ({exc}).") from exc
    default_policy = StyleSAC.policy_aliases.get(table.get(env_id, {}).get("policy"))
    single_style_default = not getattr(default_policy, "needs_style_image", True)
    if policy is None and (init or "").startswith(RLNST_PREFIX) and not single_style_default:
        policy = "RLNSTPolicy"
    entry = table[hyperparams_key(table, env_id, policy, hyperparams_file)]
    config = merge(entry, parse_overrides(overrides))
    if init is None and config.get("policy") == entry.get("policy"):  # the file's init belongs to its policy
        init = config.get("init")
    config.update(
        {k: v for k, v in {"policy": policy, "n_timesteps": n_timesteps, "n_envs": n_envs}.items() if v is not None}
    )
    given = {k: v for k, v in (env_kwargs or {}).items() if v is not None}
    config["env_kwargs"] = {**config.get("env_kwargs", {}), **given}
    config.setdefault("n_envs", 1)
    config["env_id"], config["seed"] = env_id, seed
    config["init"] = None if init in (None, "", NO_INIT) else init
    pin_single_style(config)
    use_released_architecture(config)
    return config


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The algorithm class of an ``--algo`` name.

    :param name: a key of :data:`ALGOS`.
    :raises ConfigError: an unknown name, or sb3-contrib missing for ``tqc``.
    """
    if name not in ALGOS:
        raise ConfigError(f"Unknown algorithm {name!r}; expected one of {sorted(ALGOS)}.")
    module, cls = ALGOS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ConfigError(f"--algo {name} needs {module}: pip install 'rl-nst[bench]' ({exc}).") from exc


def action_noise(config: dict[str, Any], action_space: spaces.Box) -> ActionNoise | None:
    """RL Zoo's ``noise_type`` / ``noise_std`` entries as an SB3 action noise (``None`` without them).

    :param config: the run configuration.
    :param action_space: the env's action space (the noise has its shape).
    """
    kind = config.get("noise_type")
    if kind is None:
        return None
    if kind not in NOISES:
        raise ConfigError(f"Unknown noise_type {kind!r}; expected one of {sorted(NOISES)}.")
    shape = action_space.shape
    return NOISES[kind](mean=np.zeros(shape), sigma=np.full(shape, float(config.get("noise_std", 0.1))))


def algorithm_kwargs(config: dict[str, Any], algo_class: type[BaseAlgorithm] = StyleSAC) -> dict[str, Any]:
    """The constructor arguments of ``algo_class`` in a run configuration (every key but the run's own): the one
    filter of the training commands and the benchmarks.

    :param config: the run configuration (hyper-parameter file + ``--hyperparams`` + flags).
    :param algo_class: the algorithm (default StyleSAC).
    :raises ConfigError: a key the algorithm does not take.
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
        raise ConfigError(
            f"Unknown hyper-parameter {', '.join(unknown)} for {algo_class.__name__} (--hyperparams or "
            f"the hyper-parameter file); expected one of: {', '.join(sorted(accepted | set(RUN_KEYS)))}."
        )
    for key in POSITIVE_KEYS:
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Hyper-parameter {key} must be an integer >= 1, got {value!r}.")
    return kwargs


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run runs, as opposed to what it trains (the hyper-parameters): written to the run folder's
    ``args.yml`` beside ``config.yml`` and read back by ``--resume``.

    :param device: where the networks and the env's VGG-19 run (``auto``, ``cpu``, ``cuda``, ...).
    :param log_folder: where run folders are created.
    :param tensorboard_log: also log to TensorBoard in this folder (``None``: CSV and stdout only).
    :param save_freq: checkpoint every this many env steps (0: never).
    :param eval_freq: evaluate every this many env steps (0: never).
    :param max_minutes: stop training after this many minutes of wall-clock time (``None``: no budget).
    :param progress: show a progress bar.
    :param verbose: 0 quiet, 1 info, 2 debug.
    :param dist_timeout: seconds a distributed rank waits for the others.
    :param vec_env: how ``n_envs > 1`` envs run (:data:`VEC_ENVS`): ``"batched"``, one batched env (one VGG-19, one
        reward pass per step: ``NSTVectorEnv``); ``"subproc"``, a process per env; ``"dummy"``, one after another.
    """

    device: str = "auto"
    log_folder: str = "runs"
    tensorboard_log: str | None = None
    save_freq: int = 500
    eval_freq: int = 500
    max_minutes: float | None = None
    progress: bool = True
    verbose: int = 1
    dist_timeout: float = 300.0
    vec_env: str = "batched"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: object = "run settings") -> RunSettings:
        """Settings from a mapping (``args.yml``), every key one of the fields.

        :param values: the settings.
        :param source: what they were read from (for the error message).
        :raises ConfigError: an unknown key.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(
                f"{source}: unknown run setting {', '.join(unknown)}; expected {', '.join(sorted(fields))}."
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (what ``args.yml`` holds)."""
        return dataclasses.asdict(self)
