"""StyleSAC: Soft Actor-Critic with an actor-builder head and joint control + generative learning.

Papers:
- SAC: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018.
- SAEC / RL-NST: Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023.
- RLMiniStyler: Hu et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural Style Generation",
  IJCAI 2025.

Every environment step is followed (``train_freq=1``, ``gradient_steps=1``) by one update that reads top to
bottom in :meth:`StyleSAC.train`:

1. **critic** (control): soft Bellman residual of twin critics against
   ``r + gamma * (1 - terminated) * (min_j Q'_j(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(.|s')``;
2. **generative**: the policy's image losses on replayed states with a fresh reparameterised latent, updating
   actor + builder (RLMiniStyler: content, style, contrastive, uncertainty-weighted; RL-NST: Gram style,
   content against the photo, total variation);
3. every ``actor_update_interval`` updates, **actor** (control): ``alpha * log pi(a|s) - min_j Q_j(s, a)`` on
   a reparameterised sample;
4. **temperature** (control), every update: ``-log_alpha * (log pi(a|s) + target_entropy)`` on the actor's
   sample, or between actor updates on the critic target's sample ``a' ~ pi(.|s')``, at its own learning
   rate ``ent_coef_lr``;
5. Polyak averaging of the target critics (``tau``).

``control_learning=False`` skips phases 1, 3, 4 and 5: the actor-builder then learns from the generative loss
alone (the papers' no-RL ablation). Log-probabilities are means over latent elements, so ``target_entropy`` is
per element (see :data:`DEFAULT_TARGET_ENTROPY`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update

from agents.style_sac.buffers import FeatureReplayBuffer, check_replay_memory
from agents.style_sac.manifest import manifest_json, write_with_manifest
from agents.style_sac.objectives import soft_bellman_target, temperature_loss
from agents.style_sac.policies import (
    ActorBuilderPolicy,
    MiniStylerPolicy,
    RLNSTPolicy,
    RLNSTVideoPolicy,
)
from nst_env.losses import unpack_mean_std
from nst_env.vgg import VGG19Features

SelfStyleSAC = TypeVar("SelfStyleSAC", bound="StyleSAC")

#: Default target entropy per latent element: the entropy of the authors' released RLMiniStyler policy
#: (noise std about 0.0035, a fifth of its latent's spatial spread per channel of about 0.016). SAC's ``-1``
#: per element (noise std about 0.09) drowns the latent's signal once AdaIN normalises each channel.
DEFAULT_TARGET_ENTROPY = -4.25


class StyleSAC(OffPolicyAlgorithm):
    """Soft Actor-Critic whose action is a spatial latent decoded into the next image by a builder.

    Acting: the policy samples a latent, the builder turns it into an image, the env receives the image and
    the replay buffer stores the latent (no uniform random warm-up: images from noise teach nothing).

    :param policy: the policy class or its alias: ``"MiniStylerPolicy"`` (RLMiniStyler, any style),
        ``"RLNSTPolicy"`` (RL-NST, one style; needs ``NST-v0`` with ``observe_content=True``) or
        ``"RLNSTVideoPolicy"`` (RL-NST's recurrent video model; needs ``NSTVideo-v0``).
    :param env: the environment (``NST-v0``) or its id.
    :param learning_rate: learning rate of critics, builder, loss weights and temperature (paper: 2e-4); the
        actor's is ``learning_rate * policy_kwargs["actor_lr_ratio"]`` (paper: 2e-5). Constant or schedule.
    :param buffer_size: replay capacity in transitions (paper: 5,000).
    :param learning_starts: env steps collected before the first update.
    :param batch_size: minibatch size of every update (paper: 8).
    :param tau: soft update coefficient of the target critics (paper: 0.005).
    :param gamma: discount factor (paper: 0.99).
    :param train_freq: update every ``train_freq`` env steps (paper: 1).
    :param gradient_steps: updates per rollout (paper: 1).
    :param actor_update_interval: the actor's control update every this many updates (paper: 4).
    :param ent_coef: temperature ``alpha``: ``"auto_0.001"`` (learned, initial 0.001; the default),
        ``"auto"`` (learned, initial 1, SAC's) or a fixed float.
    :param target_entropy: per-latent-element target entropy when the temperature is learned (``"auto"``:
        :data:`DEFAULT_TARGET_ENTROPY`, -4.25).
    :param ent_coef_lr: learning rate of the temperature, updated every update (SAC's lr 3e-4 would move
        ``log alpha`` by at most about 0.3 in 1,000 updates).
    :param control_learning: run the control updates (critic, actor, temperature, target critics); off: the
        actor-builder learns from the generative loss alone (the papers' no-RL ablation).
    :param share_env_features: take the replayed states' VGG-19 features (the moving image's relu4_1, the style
        image's statistics) from the env, which computed them for the reward (``NSTEnv(info_features=True)``,
        turned on by :meth:`learn`), and keep them in a :class:`FeatureReplayBuffer` (about 1/3 of the
        images' bytes more) instead of running VGG-19 on ``2 x batch_size`` images per update. Only for
        policies whose losses use those features (:class:`MiniStylerPolicy`) and ``"meanstd"`` envs with the
        same VGG weights; otherwise the features are computed.
    :param use_amp: mixed precision for the networks' forward passes (float16 with a gradient scaler on CUDA,
        bfloat16 on the CPU).
    :param vgg_weights: explicit VGG-19 weights for the generative losses (see :mod:`nst_env.vgg`); the
        layers computed are the policy's ``vgg_layers``.
    :param replay_buffer_class: replay buffer (default SB3's ``DictReplayBuffer``).
    :param replay_buffer_kwargs: its extra arguments.
    :param action_noise: not supported (the latent is Gaussian); must be ``None``.
    :param stats_window_size: episodes averaged for the rollout logs.
    :param tensorboard_log: TensorBoard log folder.
    :param policy_kwargs: extra policy arguments (see :class:`MiniStylerPolicy`, :class:`RLNSTPolicy`,
        :class:`RLNSTVideoPolicy`).
    :param verbose: 0 silent, 1 info (prints the replay memory estimate), 2 debug.
    :param seed: seed of the RNGs.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    :param _init_setup_model: build the networks now.

    :attr:`gradient_hook` (not saved): called with each optimizer after its backward pass and before its step,
    e.g. :class:`agents.training.distributed.GradientAverager`, which averages the gradients across the ranks of a
    distributed run (``None``: nothing is called).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MiniStylerPolicy": MiniStylerPolicy,
        "RLNSTPolicy": RLNSTPolicy,
        "RLNSTVideoPolicy": RLNSTVideoPolicy,
    }
    policy: ActorBuilderPolicy

    def __init__(
        self,
        policy: str | type[ActorBuilderPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 2e-4,
        buffer_size: int = 5_000,
        learning_starts: int = 100,
        batch_size: int = 8,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        actor_update_interval: int = 4,
        ent_coef: str | float = "auto_0.001",
        target_entropy: str | float = "auto",
        ent_coef_lr: float = 3e-3,
        control_learning: bool = True,
        share_env_features: bool = True,
        use_amp: bool = False,
        vgg_weights: str | None = None,
        replay_buffer_class: type[DictReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        action_noise: ActionNoise | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if action_noise is not None:
            raise ValueError("StyleSAC explores through its Gaussian latent; action_noise must be None.")
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            support_multi_env=True,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
        )
        self.actor_update_interval = actor_update_interval
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.ent_coef_lr = ent_coef_lr
        self.control_learning = control_learning
        self.share_env_features = share_env_features
        self._last_features: list[dict[str, Any]] | None = None
        self._sharing_features = False
        self.use_amp = use_amp
        self.vgg_weights = vgg_weights
        self.log_ent_coef: torch.Tensor | None = None
        self.ent_coef_optimizer: torch.optim.Optimizer | None = None
        self.gradient_hook: Callable[[torch.optim.Optimizer], None] | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self.latent_space = self.policy.latent_space()
        self.vgg = VGG19Features(self.policy.vgg_layers, weights=self.vgg_weights, device=self.device)
        feature_shapes = self._shared_feature_shapes()
        if self.replay_buffer is None:
            feature_bytes = FeatureReplayBuffer.bytes_per_transition(feature_shapes) if feature_shapes else 0
            check_replay_memory(
                self.observation_space, self.latent_space, self.buffer_size, self.n_envs, feature_bytes, self.verbose
            )
            buffer_class = self.replay_buffer_class or (FeatureReplayBuffer if feature_shapes else DictReplayBuffer)
            buffer_kwargs = dict(self.replay_buffer_kwargs)
            if issubclass(buffer_class, FeatureReplayBuffer):
                buffer_kwargs.setdefault("feature_shapes", feature_shapes)
            self.replay_buffer = buffer_class(
                self.buffer_size,
                self.observation_space,
                self.latent_space,
                device=self.device,
                n_envs=self.n_envs,
                **buffer_kwargs,
            )
        self._convert_train_freq()
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp and self.device.type == "cuda")

        if isinstance(self.target_entropy, str):
            if self.target_entropy != "auto":
                raise ValueError(f"target_entropy must be 'auto' or a number, got {self.target_entropy!r}.")
            self.target_entropy = DEFAULT_TARGET_ENTROPY
        if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
            init = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            if init <= 0:
                raise ValueError(f"The initial temperature must be positive, got {init}.")
            self.log_ent_coef = torch.log(torch.ones(1, device=self.device) * init).requires_grad_(True)
            self.ent_coef_optimizer = torch.optim.Adam(
                [self.log_ent_coef], lr=self.ent_coef_lr, betas=self.policy.adam_betas
            )
        else:
            self.ent_coef_tensor = torch.tensor(float(self.ent_coef), device=self.device)

    # ------------------------------------------------------------------ shared VGG-19 features
    def _shared_feature_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Shapes of the env features the policy's losses can reuse (``None``: sharing is off)."""
        if not (self.share_env_features and self.policy.reuses_env_features):
            return None
        _, height, width = self.observation_space["moving"].shape  # type: ignore[index]
        with torch.no_grad():
            feats = self.vgg(torch.zeros(1, 3, height, width, device=self.device), self.policy.vgg_layers)
        self._style_channels = {name: feats[name].shape[1] for name in self.policy.style_layers}
        content = tuple(feats[self.policy.content_layer].shape[1:])
        return {"vgg_content": content, "vgg_style_statistics": (2 * sum(self._style_channels.values()),)}

    def _env_can_share_features(self) -> bool:
        """Whether every env computes the features the policy needs with the same VGG-19 weights."""
        assert self.env is not None
        try:
            kinds, sources = self.env.get_attr("style_loss_kind"), self.env.get_attr("vgg_source")
        except AttributeError:
            return False
        return all(kind == "meanstd" for kind in kinds) and all(source == self.vgg.source for source in sources)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """SB3's set-up; first asks the env for its VGG-19 features when the replay buffer keeps them."""
        sharing = isinstance(self.replay_buffer, FeatureReplayBuffer) and self._env_can_share_features()
        if sharing:
            self.env.env_method("set_wrapper_attr", "info_features", True)  # type: ignore[union-attr]
        elif isinstance(self.replay_buffer, FeatureReplayBuffer) and self.verbose >= 1:
            print("The env does not provide matching VGG-19 features: StyleSAC computes them.")
        self._sharing_features = sharing
        resets = reset_num_timesteps or self._last_obs is None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if resets or not sharing:
            # reset_infos of the innermost VecEnv: a VecEnvWrapper (VecMonitor) keeps an empty list of its own
            self._last_features = list(self.env.unwrapped.reset_infos) if sharing else None  # type: ignore[union-attr]
        return result

    def _store_transition(
        self,
        replay_buffer: DictReplayBuffer,  # type: ignore[override]
        buffer_action: np.ndarray,
        new_obs: dict[str, np.ndarray],  # type: ignore[override]
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's, handing the buffer the env features of the transition's first observation; then remembers
        those of the new one (after an automatic reset, the reset's)."""
        if isinstance(replay_buffer, FeatureReplayBuffer):
            replay_buffer.set_observation_features(self._last_features or [{}] * len(dones))
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[arg-type]
        if self._sharing_features:
            reset_infos = self.env.unwrapped.reset_infos  # type: ignore[union-attr]
            self._last_features = [reset_infos[i] if done else info for i, (done, info) in enumerate(zip(dones, infos))]

    def _reference_features(self, features: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, dict] | None:
        """The sampled observations' content features and style statistics, from the replay buffer."""
        if features is None:
            return None
        return features["vgg_content"].float(), unpack_mean_std(features["vgg_style_statistics"], self._style_channels)

    # ------------------------------------------------------------------ acting
    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The env gets the built image, the replay buffer the latent (SB3 hook)."""
        assert self._last_obs is not None and isinstance(self._last_obs, dict)
        obs, _ = self.policy.obs_to_tensor(self._last_obs)
        with torch.no_grad(), self._autocast():
            latent, image = self.policy.act(obs, deterministic=False)
        return image.float().cpu().numpy(), latent.float().cpu().numpy().astype(self.latent_space.dtype)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    # ------------------------------------------------------------------ learning
    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(loss).backward()
        self._gradients_ready(optimizer)
        self.grad_scaler.step(optimizer)

    def _gradients_ready(self, optimizer: torch.optim.Optimizer) -> None:
        """Hand ``optimizer`` to :attr:`gradient_hook` (if any) between its backward pass and its step.

        :param optimizer: the optimizer whose parameters' gradients are ready.
        """
        if self.gradient_hook is not None:
            self.gradient_hook(optimizer)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_optimizer_learning_rates()
        logs: dict[str, list[float]] = {}

        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            obs = self.policy.images(data.observations)  # type: ignore[arg-type]
            latents = data.actions.float().view(-1, *self.latent_space.shape)  # SB3 stores flat actions
            alpha = self.log_ent_coef.exp().detach() if self.log_ent_coef is not None else self.ent_coef_tensor
            log_prob: torch.Tensor | None = None  # the update's freshest log pi(a|s), for the temperature

            # 1. Critic: soft Bellman residual with clipped double-Q targets.
            if self.control_learning:
                with torch.no_grad(), self._autocast():
                    next_obs = self.policy.images(data.next_observations)  # type: ignore[arg-type]
                    next_sample = self.policy.sample(next_obs)
                    next_q = self.policy.q_values(next_obs, next_sample.latent, target=True).float().min(dim=0).values
                    target_q = soft_bellman_target(
                        data.rewards.view(-1),
                        data.dones.view(-1),
                        next_q,
                        next_sample.log_prob.float(),
                        alpha,
                        self.gamma,
                    )
                with self._autocast():
                    current_q = self.policy.q_values(obs, latents).float()
                critic_loss = 0.5 * sum(F.mse_loss(q, target_q) for q in current_q)
                assert isinstance(critic_loss, torch.Tensor)
                self._step(self.policy.critic.optimizer, critic_loss)
                logs.setdefault("critic_loss", []).append(critic_loss.item())
                logs.setdefault("q_value", []).append(current_q.mean().item())

            # 2. Generative: the policy's image losses through actor and builder.
            with self._autocast():
                reference = self._reference_features(getattr(data, "features", None))
                generative_loss, terms = self.policy.generative_loss(obs, self.vgg, reference)
            self._step(self.policy.generative_optimizer, generative_loss)
            logs.setdefault("generative_loss", []).append(generative_loss.item())
            for name, value in terms.items():
                logs.setdefault(name, []).append(value)

            # 3. Actor, every `actor_update_interval` updates.
            if self.control_learning and self._n_updates % self.actor_update_interval == 0:
                with self._autocast():
                    sample = self.policy.sample(obs)
                    q_pi = self.policy.q_values(obs, sample.latent).float().min(dim=0).values
                log_prob = sample.log_prob.float()
                actor_loss = (alpha * log_prob - q_pi).mean()
                self._step(self.policy.actor.optimizer, actor_loss)
                logs.setdefault("actor_loss", []).append(actor_loss.item())

            # 4. Temperature, every update (between actor updates on the critic target's sample of pi(.|s')).
            if self.control_learning:
                log_prob = next_sample.log_prob.float() if log_prob is None else log_prob
                logs.setdefault("entropy", []).append(-log_prob.mean().item())
                if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                    ent_coef_loss = temperature_loss(self.log_ent_coef, log_prob, float(self.target_entropy))
                    self.ent_coef_optimizer.zero_grad(set_to_none=True)
                    ent_coef_loss.backward()
                    self._gradients_ready(self.ent_coef_optimizer)
                    self.ent_coef_optimizer.step()
                    logs.setdefault("ent_coef_loss", []).append(ent_coef_loss.item())
                logs.setdefault("ent_coef", []).append(float(alpha))
            self.grad_scaler.update()

            # 5. Target critics.
            if self.control_learning:
                polyak_update(self.policy.critic.parameters(), self.policy.critic_target.parameters(), self.tau)
            self._n_updates += 1

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def _update_optimizer_learning_rates(self) -> None:
        """Follow the learning-rate schedule, keeping the actor at ``actor_lr_ratio`` of it (the temperature
        keeps its own constant ``ent_coef_lr``)."""
        lr = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", lr)
        ratio = self.policy.actor_lr_ratio
        for optimizer in self.policy.optimizers:
            for group in optimizer.param_groups:
                is_actor = optimizer is self.policy.actor.optimizer or group.get("actor", False)
                group["lr"] = lr * ratio if is_actor else lr

    def learn(
        self: SelfStyleSAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "StyleSAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfStyleSAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    # ------------------------------------------------------------------ saving
    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "vgg",
            "grad_scaler",
            "latent_space",
            "_last_features",
            "_sharing_features",
            "gradient_hook",
        ]

    def save(
        self,
        path: str | os.PathLike | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Stable-Baselines3's zip, plus the manifest ``rl_nst.json`` (:mod:`agents.style_sac.manifest`): the
        policy's class, constructor arguments and spaces as plain JSON, so that
        :func:`~agents.inference.models.load_policy` rebuilds the policy without unpickling anything.

        :param path: the file (``.zip`` is added to a name without a suffix, as Stable-Baselines3 does) or a
            writable binary file object.
        :param exclude: attributes not to save, besides the default ones.
        :param include: attributes to save although excluded by default.
        """
        archive = io.BytesIO()
        super().save(archive, exclude=exclude, include=include)
        write_with_manifest(archive, manifest_json(self.policy, self.num_timesteps), path)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.actor.optimizer", "policy.critic.optimizer", "policy.generative_optimizer"]
        if self.ent_coef_optimizer is not None:
            return [*state_dicts, "ent_coef_optimizer"], ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]

    def load_pretrained(self, name: str = "rlministyler") -> StyleSAC:
        """Start from the authors' released actor + builder (the critics keep their fresh weights).

        :param name: a released model of the policy's kind: ``"rlministyler"`` for :class:`MiniStylerPolicy`,
            ``"rlnst:blue_swirls"`` (``fire``, ``maxresdefault``) for :class:`RLNSTPolicy`; or a folder of
            weights in the same layout.
        """
        self.policy.load_released(name)
        return self
