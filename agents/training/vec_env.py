"""Stable-Baselines3's ``VecEnv`` API on one batched Gymnasium vector env (:class:`~nst_env.vector.NSTVectorEnv`), so
that StyleSAC and SB3's algorithms collect from it: :class:`BatchedVecEnv`, and :func:`make_batched_vec_env` (with
``VecMonitor``'s CSV), which :func:`agents.training.experiment.make_env` uses for ``n_envs > 1``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import ResultsWriter
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

#: Keys of a same-step vector env's step ``info`` that hold the ended episodes' last observation and info.
FINAL_KEYS = ("final_obs", "final_info")


def infos_to_list(infos: Mapping[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's vector ``info`` (a dict of arrays, each key with its ``_key`` mask) as one dict per env, SB3's
    form; nested dicts likewise.

    :param infos: the vector env's info.
    :param num_envs: how many envs it batches.
    """
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue  # a mask
        mask = np.asarray(infos.get(f"_{key}", np.ones(num_envs, bool)))
        rows = infos_to_list(value, num_envs) if isinstance(value, Mapping) else value
        for i in np.flatnonzero(mask):
            out[i][key] = rows[i]
    return out


class BatchedVecEnv(VecEnv):
    """A Gymnasium vector env with same-step autoreset and numpy arrays (``NSTVectorEnv``, also under Gymnasium's
    vector wrappers) as an SB3 ``VecEnv``.

    ``reset`` returns the observations only, with each env's reset info in :attr:`reset_infos`; ``step_wait``
    returns one info dict per env, for an env whose episode ended the ended step's info with
    ``terminal_observation`` and ``TimeLimit.truncated`` (its next episode's reset info in :attr:`reset_infos`),
    as SB3's ``DummyVecEnv`` does. Seeds (:meth:`seed`) and options (:meth:`set_options`) go to the next
    ``reset``, options per env as lists (``NSTVectorEnv``'s per-env ``options``).

    The envs of a batched env share one object: :meth:`get_attr` gives its attribute once per env, and
    :meth:`set_attr` and :meth:`env_method` act on all envs at once (other indices raise ``ValueError``);
    ``env_method("get_wrapper_attr", name)`` and ``("set_wrapper_attr", name, value)`` are :meth:`get_attr` and
    :meth:`set_attr`. No env is wrapped in a ``gym.Wrapper`` (:meth:`env_is_wrapped`): monitor with ``VecMonitor``.

    :param venv: the vector env.
    :raises ValueError: a vector env in another autoreset mode, or one that returns torch tensors.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"BatchedVecEnv needs a vector env with same-step autoreset (metadata['autoreset_mode'] = "
                f"AutoresetMode.SAME_STEP, as SB3 resets an env in the step that ends its episode), got {mode!r}."
            )
        array_type = getattr(venv.unwrapped, "array_type", "numpy")
        if array_type != "numpy":
            raise ValueError(
                f"SB3 takes numpy arrays: make the vector env with array_type='numpy', not {array_type!r}."
            )
        self.venv = venv
        self.actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        seeds = self._seeds if any(seed is not None for seed in self._seeds) else None
        obs, infos = self.venv.reset(seed=seeds, options=self._vector_options())
        self.reset_infos = infos_to_list(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.venv.step(self.actions)
        dones = np.logical_or(terminated, truncated)
        step_infos = infos_to_list({k: v for k, v in infos.items() if k.lstrip("_") not in FINAL_KEYS}, self.num_envs)
        final_infos = infos_to_list(infos.get("final_info", {}), self.num_envs)
        out = []
        for i in range(self.num_envs):
            info = step_infos[i]
            if dones[i]:
                self.reset_infos[i] = info
                info = {**final_infos[i], "terminal_observation": infos["final_obs"][i]}
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            out.append(info)
        return obs, np.asarray(rewards, dtype=np.float32), dones, out

    def _vector_options(self) -> dict[str, Any] | None:
        """SB3's per-env options as one options dict: each key's values as a list, one per env."""
        keys = list(dict.fromkeys(key for options in self._options for key in options))
        return {key: [options.get(key) for options in self._options] for key in keys} or None

    # ------------------------------------------------------------------ the envs' attributes
    def _all_envs(self, indices: VecEnvIndices, what: str) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"{what}: the {self.num_envs} envs of a batched env share it; it applies to all of them.")

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv.unwrapped, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._all_envs(indices, f"set_attr({attr_name!r})")
        setattr(self.venv.unwrapped, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        if method_name == "get_wrapper_attr":
            return self.get_attr(*method_args, indices=indices)
        if method_name == "set_wrapper_attr":
            self.set_attr(*method_args, indices=indices)
            return [None for _ in self._get_indices(indices)]
        self._all_envs(indices, f"env_method({method_name!r})")
        result = getattr(self.venv.unwrapped, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def close(self) -> None:
        self.venv.close()


def has_vector_entry_point(env_id: str) -> bool:
    """Whether a registered env id (``"module:Id"`` imports ``module`` first) has a ``vector_entry_point``.

    :param env_id: the id.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        importlib.import_module(module)
    return gym.spec(name).vector_entry_point is not None


def make_batched_vec_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    monitor_file: str | os.PathLike | None = None,
    append: bool = False,
) -> VecEnv:
    """``gym.make_vec(env_id, num_envs=n_envs, **env_kwargs)`` from the env's ``vector_entry_point`` as an SB3
    ``VecEnv`` (:class:`BatchedVecEnv`), under ``VecMonitor``: SB3's ``make_vec_env`` for a batched env.

    :param env_id: a registered id with a ``vector_entry_point`` (``"module:Id"`` imports ``module`` first).
    :param n_envs: how many envs it batches.
    :param seed: env ``i`` is seeded ``seed + i`` at the first reset (``None``: unseeded).
    :param env_kwargs: the env's arguments.
    :param monitor_file: where ``VecMonitor`` writes the episodes of all envs (``.monitor.csv`` is appended to a
        name without it; ``None``: no file).
    :param append: add to an existing monitor file (a resumed run) instead of starting it anew.
    """
    venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **dict(env_kwargs or {}))
    env = BatchedVecEnv(venv)
    if seed is not None:
        env.seed(seed)
        env.action_space.seed(seed)
    monitor = VecMonitor(env)
    if monitor_file is not None:
        header = {"t_start": monitor.t_start, "env_id": env_id.rpartition(":")[2]}
        monitor.results_writer = ResultsWriter(os.fspath(monitor_file), header=header, override_existing=not append)
    return monitor
