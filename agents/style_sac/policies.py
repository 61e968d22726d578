"""Actor-builder policies for :class:`agents.style_sac.StyleSAC`.

An actor-builder policy splits SAC's actor in two (SAEC: stochastic actor-executor-critic):

- the **actor** maps the state (moving image + style image) to a Gaussian over a *spatial latent*;
- the **builder** (executor / stylizer / decoder) turns a latent sample into the next image, which is the
  action the environment receives.

The replay buffer stores the latent (the agent's real action); the critics judge ``(moving image, latent)``.
Log-probabilities use one convention throughout: the **mean** over latent elements, paired with a
per-element target entropy (``-1`` by default, i.e. SAC's ``-dim`` heuristic divided by ``dim``), so the
temperature is independent of the image size (README: deviations from the papers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from agents.networks import MiniStylerActor, MiniStylerBuilder, MiniStylerCritic, StyleCode, pad_to_multiple
from nst_env.losses import content_loss, style_loss, style_statistics
from nst_env.vgg import VGG19Features

#: VGG-19 layers of RLMiniStyler's generative losses (style: relu1_1..relu4_1; content: relu4_1).
MINISTYLER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
MINISTYLER_CONTENT_LAYER = "relu4_1"


class LatentSample(NamedTuple):
    """A reparameterised latent action and what produced it."""

    latent: torch.Tensor  #: ``N x C x h x w`` sample (gradients flow to the actor)
    log_prob: torch.Tensor  #: ``N`` mean log-density per latent element
    style_code: StyleCode  #: the style branch's output, reused by the builder
    size: tuple[int, int]  #: the images' size before padding to a multiple of 4


def style_contrastive_loss(output_reps: list[torch.Tensor], style_reps: list[torch.Tensor]) -> torch.Tensor:
    """Hierarchical style representation contrastive loss (HSRCL, RLMiniStyler Sec. 3.3).

    For each level and each sample ``i``: the distance of the output's style representation to its own
    style image's, divided by the summed distance to the other samples' style images; averaged over samples
    and levels. Needs a batch of at least 2 (returns 0 otherwise).

    :param output_reps: per level, ``N x D`` style representations of the generated images.
    :param style_reps: per level, ``N x D`` style representations of the style images.
    """
    n = output_reps[0].shape[0]
    if n < 2:
        return output_reps[0].new_zeros(())
    total = output_reps[0].new_zeros(())
    for out, ref in zip(output_reps, style_reps):
        dist = torch.cdist(out.float(), ref.float()) / math.sqrt(out.shape[1])  # RMS distance, N x N
        positive = dist.diagonal()
        negative = dist.sum(dim=1) - positive
        total = total + (positive / (negative + 1e-8)).mean()
    return total / len(output_reps)


class MiniStylerPolicy(BasePolicy):
    """RLMiniStyler's policy: one actor-builder for any style, 3D latent action ``64 x H/4 x W/4``.

    Hu et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural Style Generation", IJCAI 2025.
    Networks (actor 217,312 + builder 153,843 parameters; twin critics and their targets) are in
    :mod:`agents.networks.ministyler`.

    :param observation_space: ``Dict(moving=Box(3,H,W) uint8, style=Box(3,H,W) uint8, ...)``.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics, the builder and the loss weights.
    :param actor_lr_ratio: the actor's learning rate relative to ``lr_schedule`` (paper: 2e-5 / 2e-4).
    :param n_critics: number of critics (clipped double-Q with 2).
    :param adam_betas: Adam's betas for every optimizer (paper: (0.5, 0.9)).
    :param latent_dtype: numpy dtype of latents in the replay buffer (``"float16"`` halves its memory).
    :param optimizer_class: the optimizer (Adam).
    :param optimizer_kwargs: extra optimizer arguments.
    """

    latent_channels = 64
    downsampling = 4

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        actor_lr_ratio: float = 0.1,
        n_critics: int = 2,
        adam_betas: tuple[float, float] = (0.5, 0.9),
        latent_dtype: str = "float32",
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or not {"moving", "style"} <= set(observation_space.spaces):
            raise ValueError(f"{type(self).__name__} needs a Dict observation with 'moving' and 'style' images.")
        optimizer_kwargs = {"betas": tuple(adam_betas), **(optimizer_kwargs or {})}
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=True,
        )
        self.actor_lr_ratio = actor_lr_ratio
        self.n_critics = n_critics
        self.adam_betas = tuple(adam_betas)
        self.latent_dtype = latent_dtype
        self._build(lr_schedule)

    # ----------------------------------------------------------------- networks
    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = MiniStylerActor()
        self.builder = MiniStylerBuilder()
        self.critic = nn.ModuleList(MiniStylerCritic() for _ in range(self.n_critics))
        self.critic_target = nn.ModuleList(MiniStylerCritic() for _ in range(self.n_critics))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        #: log of the uncertainty weights' p_i (content, style, contrastive), Kendall et al. 2018
        self.loss_log_p = nn.Parameter(torch.zeros(3))
        lr = lr_schedule(1)
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(), lr=lr * self.actor_lr_ratio, **self.optimizer_kwargs
        )
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr, **self.optimizer_kwargs)
        self.generative_optimizer = self.optimizer_class(
            [
                {"params": list(self.builder.parameters()) + [self.loss_log_p], "lr": lr},
                {"params": list(self.actor.parameters()), "lr": lr * self.actor_lr_ratio, "actor": True},
            ],
            lr=lr,
            **self.optimizer_kwargs,
        )

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the policy owns (the temperature's lives in the algorithm)."""
        return [self.actor.optimizer, self.critic.optimizer, self.generative_optimizer]

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of the latent action for ``height x width`` images."""
        d = self.downsampling
        return (self.latent_channels, -(-height // d), -(-width // d))

    def latent_space(self) -> spaces.Box:
        """The replay buffer's action space: the latent for the env's image size."""
        _, h, w = self.observation_space["moving"].shape
        return spaces.Box(-np.inf, np.inf, self.latent_shape(h, w), dtype=np.dtype(self.latent_dtype))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            actor_lr_ratio=self.actor_lr_ratio,
            n_critics=self.n_critics,
            adam_betas=self.adam_betas,
            latent_dtype=self.latent_dtype,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
        )
        data["optimizer_kwargs"] = {k: v for k, v in self.optimizer_kwargs.items() if k != "betas"}
        return data

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.builder.train(mode)
        self.critic.train(mode)
        self.training = mode

    # ----------------------------------------------------------------- images
    @staticmethod
    def images(obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 observation tensors -> float images in ``[0, 1]`` (same keys)."""
        return {k: (v.float() / 255.0 if v.dtype == torch.uint8 else v.float()) for k, v in obs.items()}

    def sample(self, images: Mapping[str, torch.Tensor], deterministic: bool = False) -> LatentSample:
        """A reparameterised latent for each state (the distribution's mean when ``deterministic``).

        :param images: float images in ``[0, 1]``: ``moving`` and ``style``, ``N x 3 x H x W``.
        :param deterministic: use the mean instead of sampling (its log-prob is then at the mean).
        """
        moving, size = pad_to_multiple(images["moving"], self.downsampling)
        style, _ = pad_to_multiple(images["style"], self.downsampling)
        code = self.actor.encode_style(style)
        mean, log_scale = self.actor(moving, code)
        scale = log_scale.exp()
        latent = mean if deterministic else mean + scale * torch.randn_like(mean)
        log_prob = (-0.5 * ((latent - mean) / scale).pow(2) - log_scale - 0.5 * math.log(2 * math.pi)).mean(dim=(1, 2, 3))
        return LatentSample(latent, log_prob, code, size)

    def build(self, sample: LatentSample) -> torch.Tensor:
        """The builder's image for a latent, cropped back to the input size (unclamped)."""
        out = self.builder(sample.latent, sample.style_code)
        return out[..., : sample.size[0], : sample.size[1]]

    def q_values(self, moving: torch.Tensor, latent: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q-values of every critic, ``n_critics x N``. ``moving`` in ``[0, 1]``, unpadded."""
        moving, _ = pad_to_multiple(moving, self.downsampling)
        critics = self.critic_target if target else self.critic
        return torch.stack([q(moving, latent.to(moving.dtype)).view(-1) for q in critics])

    def act(self, obs: Mapping[str, torch.Tensor], deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, next image in [0, 1])`` for observation tensors (uint8 or float)."""
        sample = self.sample(self.images(obs), deterministic)
        return sample.latent, self.build(sample).clamp(0.0, 1.0)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        assert isinstance(observation, dict)
        return self.act(observation, deterministic)[1]

    # ----------------------------------------------------------------- generative learning
    def generative_loss(
        self, images: Mapping[str, torch.Tensor], vgg: VGG19Features
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """RLMiniStyler's generative objective on replayed states, with a fresh reparameterised latent.

        - content: relu4_1 MSE between the new image and the *replayed moving image*;
        - style: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) against the style;
        - contrastive: :func:`style_contrastive_loss` of the new image's style-branch encoding;
        - combined with learned uncertainty weights ``0.5 / p_i^2 * L_i + log(1 + p_i^2)``.

        :param images: float ``moving`` and ``style`` images in ``[0, 1]``.
        :param vgg: frozen VGG-19 computing at least relu1_1..relu4_1.
        :return: the weighted total and the unweighted terms (for logging).
        """
        sample = self.sample(images)
        out = self.build(sample)
        n = out.shape[0]
        with torch.no_grad():
            ref = vgg(torch.cat([images["moving"], images["style"]]), MINISTYLER_STYLE_LAYERS)
            target = style_statistics({k: v[n:] for k, v in ref.items()}, "meanstd", MINISTYLER_STYLE_LAYERS)
        feats = vgg(out, MINISTYLER_STYLE_LAYERS)
        losses = torch.stack(
            [
                content_loss(feats[MINISTYLER_CONTENT_LAYER], ref[MINISTYLER_CONTENT_LAYER][:n]),
                style_loss(feats, target, "meanstd"),
                style_contrastive_loss(
                    self.actor.encode_style(pad_to_multiple(out, self.downsampling)[0]).representations(),
                    sample.style_code.representations(),
                ),
            ]
        )
        p2 = (2.0 * self.loss_log_p).exp()
        total = (0.5 / p2 * losses + torch.log1p(p2)).sum()
        names = ("content_loss", "style_loss", "contrastive_loss")
        return total, {name: float(v) for name, v in zip(names, losses.detach())}


__all__ = ["LatentSample", "MiniStylerPolicy", "style_contrastive_loss"]
