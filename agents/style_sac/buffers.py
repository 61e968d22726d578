"""A replay buffer that also keeps the VGG-19 features the env computed for each observation.

NST-v0 runs VGG-19 on every new moving image (for the reward) and on every style image (at reset). StyleSAC's
generative update needs the same features for the replayed states: the moving image's relu4_1 features (the
content target) and the style image's channel means and stds (the style target). Storing what the env
computed (``NSTEnv(info_features=True)``) saves the agent one VGG-19 pass over ``2 x batch_size`` images per
update.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import psutil
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

#: ``info`` keys of ``NSTEnv(info_features=True)`` and the dtype each is stored in.
FEATURE_KEYS: dict[str, type] = {"vgg_content": np.float16, "vgg_style_statistics": np.float32}


class FeatureReplayBufferSamples(NamedTuple):
    """SB3's ``DictReplayBufferSamples`` plus the observations' env-computed features (``None`` when any
    sampled transition lacks them)."""

    observations: dict[str, torch.Tensor]
    actions: torch.Tensor
    next_observations: dict[str, torch.Tensor]
    dones: torch.Tensor
    rewards: torch.Tensor
    discounts: torch.Tensor | None
    features: dict[str, torch.Tensor] | None


class FeatureReplayBuffer(DictReplayBuffer):
    """SB3's ``DictReplayBuffer`` that stores, per transition, the env's VGG-19 features of the observation.

    The features of an observation arrive with the ``info`` that returned it, one step before the transition
    that starts from it is added; the algorithm hands them over with :meth:`set_observation_features` before
    each :meth:`add`. A transition added without them is marked, and a batch containing one returns
    ``features=None`` (the learner then computes them).

    :param buffer_size: capacity in transitions per env.
    :param observation_space: the env's ``Dict`` observation space.
    :param action_space: the stored action's space (StyleSAC: the latent).
    :param feature_shapes: shape of each entry of :data:`FEATURE_KEYS` for one observation.
    :param device: where sampled tensors go.
    :param n_envs: parallel envs.
    :param optimize_memory_usage: not supported by ``DictReplayBuffer`` with next observations; keep False.
    :param handle_timeout_termination: see SB3.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        feature_shapes: dict[str, tuple[int, ...]],
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs,
            optimize_memory_usage,
            handle_timeout_termination,
        )
        if set(feature_shapes) != set(FEATURE_KEYS):
            raise ValueError(f"feature_shapes needs the keys {sorted(FEATURE_KEYS)}, got {sorted(feature_shapes)}.")
        self.feature_shapes = {key: tuple(shape) for key, shape in feature_shapes.items()}
        self.features = {
            key: np.zeros((self.buffer_size, self.n_envs, *shape), dtype=FEATURE_KEYS[key])
            for key, shape in self.feature_shapes.items()
        }
        self.has_features = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self._pending: list[dict[str, np.ndarray] | None] = [None] * self.n_envs

    @staticmethod
    def bytes_per_transition(feature_shapes: dict[str, tuple[int, ...]]) -> int:
        """Extra bytes per stored transition for features of these shapes."""
        return sum(int(np.prod(shape)) * np.dtype(FEATURE_KEYS[key]).itemsize for key, shape in feature_shapes.items())

    def set_observation_features(self, infos: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> None:
        """Remember the features of the observations that the next :meth:`add` starts from.

        :param infos: per env, the ``info`` returned with the current observation (``reset_infos`` after a
            reset); entries without the feature keys mark the transition as featureless.
        """
        self._pending = [
            {key: np.asarray(info[key]) for key in FEATURE_KEYS} if all(key in info for key in FEATURE_KEYS) else None
            for info in infos
        ]

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        pos = self.pos
        for env, feats in enumerate(self._pending):
            self.has_features[pos, env] = feats is not None and all(
                feats[key].shape == shape for key, shape in self.feature_shapes.items()
            )
            if self.has_features[pos, env]:
                for key in FEATURE_KEYS:
                    self.features[key][pos, env] = feats[key]  # type: ignore[index]
        self._pending = [None] * self.n_envs
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> FeatureReplayBufferSamples:
        # DictReplayBuffer draws the env index of each sample with np.random; draw the same ones again.
        state = np.random.get_state()
        samples: DictReplayBufferSamples = super()._get_samples(batch_inds, env)
        after = np.random.get_state()
        np.random.set_state(state)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        np.random.set_state(after)
        features = None
        if self.has_features[batch_inds, env_indices].all():
            features = {key: self.to_torch(array[batch_inds, env_indices]) for key, array in self.features.items()}
        return FeatureReplayBufferSamples(**samples._asdict(), features=features)


def replay_memory_bytes(
    observation_space: spaces.Dict, latent_space: spaces.Box, buffer_size: int, n_envs: int, feature_bytes: int = 0
) -> int:
    """Bytes that SB3's ``DictReplayBuffer`` allocates (observations twice, latents, rewards and flags), plus
    ``feature_bytes`` per transition (see :class:`FeatureReplayBuffer`)."""
    obs = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in observation_space.spaces.values())
    latent = int(np.prod(latent_space.shape)) * latent_space.dtype.itemsize
    per_transition = 2 * obs + latent + 3 * 4 + feature_bytes
    return per_transition * buffer_size * n_envs


def check_replay_memory(
    observation_space: spaces.Dict,
    latent_space: spaces.Box,
    buffer_size: int,
    n_envs: int,
    feature_bytes: int = 0,
    verbose: int = 0,
) -> int:
    """The bytes a replay buffer will take (:func:`replay_memory_bytes`), refused when over 90% of the memory
    available now.

    :param observation_space: the env's observation space.
    :param latent_space: the stored actions' space (the latent).
    :param buffer_size: transitions per env.
    :param n_envs: parallel envs.
    :param feature_bytes: extra bytes per transition (:meth:`FeatureReplayBuffer.bytes_per_transition`).
    :param verbose: 1 prints the need and what is available.
    :raises MemoryError: a buffer that cannot fit, with what to lower.
    """
    need = replay_memory_bytes(observation_space, latent_space, buffer_size, n_envs, feature_bytes)
    available = psutil.virtual_memory().available
    if verbose >= 1:
        print(
            f"Replay buffer: {buffer_size} x {n_envs} transitions need {need / 2**30:.2f} GiB "
            f"(available: {available / 2**30:.1f} GiB)."
        )
    if need > 0.9 * available:
        raise MemoryError(
            f"The replay buffer needs {need / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB are "
            f"available: lower buffer_size (now {buffer_size}), the image size, or store latents "
            f"as float16 (policy_kwargs={{'latent_dtype': 'float16'}})."
        )
    return need
