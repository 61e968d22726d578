"""What every actor-builder policy shares: the latent sample, the Gaussian sample, the uncertainty-weighted sum
and :class:`ActorBuilderPolicy` (the package docstring, :mod:`agents.style_sac.policies`, says how they fit)."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from agents.networks import pad_to_multiple
from nst_env.losses import CONTENT_LAYER, STYLE_LAYERS, StyleStats
from nst_env.vgg import VGG19Features

#: VGG-19 targets of a batch of states: the moving images' content features and the style images' statistics.
ReferenceFeatures = tuple[torch.Tensor, StyleStats]


class LatentSample(NamedTuple):
    """A reparameterised latent action and what produced it."""

    latent: torch.Tensor  #: ``N x C x h x w`` sample (gradients flow to the actor)
    log_prob: torch.Tensor  #: ``N`` mean log-density per latent element
    context: Any  #: what the builder needs besides the latent (RLMiniStyler: the StyleCode; RL-NST: skips)
    size: tuple[int, int]  #: the images' size before padding to a multiple of 4
    base: torch.Tensor | None = None  #: the padded moving image a residual builder adds its output to


def gaussian_sample(
    mean: torch.Tensor, log_scale: torch.Tensor, deterministic: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised sample of ``Normal(mean, exp(log_scale))`` and its mean log-density per element.

    :param mean: the Gaussian's mean, ``N x ...``.
    :param log_scale: log of its standard deviation, same shape.
    :param deterministic: return the mean itself (its log-density is then the density's peak).
    :return: the latent (``mean + scale * eps``, differentiable in both) and its log-prob, shape ``N``.
    """
    if deterministic:  # at the mean the squared term vanishes
        latent, log_density = mean, -log_scale - 0.5 * math.log(2 * math.pi)
    else:
        scale = log_scale.exp()
        latent = mean + scale * torch.randn_like(mean)
        log_density = -0.5 * ((latent - mean) / scale).pow(2) - log_scale - 0.5 * math.log(2 * math.pi)
    return latent, log_density.flatten(start_dim=1).mean(dim=1)


def uncertainty_weighted_sum(losses: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Kendall et al.'s (CVPR 2018) uncertainty weighting in RLMiniStyler's released form:
    ``sum_i 0.5 / p_i^2 * L_i + log(1 + p_i^2)`` with learned ``p_i = exp(log_p_i)``.

    :param losses: the ``K`` losses ``L_i``.
    :param log_p: the ``K`` learned ``log p_i``.
    """
    p2 = (2.0 * log_p).exp()
    return (0.5 / p2 * losses + torch.log1p(p2)).sum()


class ActorBuilderPolicy(BasePolicy):
    """What every actor-builder policy of :class:`~agents.style_sac.StyleSAC` shares.

    SAEC (Feng et al., 2023): an **actor** (Gaussian over a spatial latent), a **builder** that decodes a
    latent into the next image, ``n_critics`` critics ``Q(moving image, latent)`` with target copies, and
    three optimizers: the actor's (control), the critics', and the generative one (builder and learned loss
    weights at ``lr``, actor at ``lr * actor_lr_ratio``).

    A subclass sets the class attributes below and implements :meth:`make_actor`, :meth:`make_builder`,
    :meth:`make_critic`, :meth:`sample`, :meth:`build`, :meth:`generative_loss` and :meth:`load_released`.

    :param observation_space: a ``Dict`` of channel-first uint8 images holding at least
        :attr:`required_keys`.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics, the builder and the extra generative parameters.
    :param actor_lr_ratio: the actor's learning rate relative to ``lr_schedule`` (RLMiniStyler: 2e-5 / 2e-4).
    :param n_critics: number of critics (clipped double-Q with 2).
    :param adam_betas: Adam's betas for every optimizer (RLMiniStyler: (0.5, 0.9)).
    :param latent_dtype: numpy dtype of latents in the replay buffer (``"float16"`` halves its memory).
    :param critic_style: the critics also read the style image (stacked onto the moving image), so Q can
        value progress per style; the papers' critics see the moving image only (``False``).
    :param optimizer_class: the optimizer (Adam).
    :param optimizer_kwargs: extra optimizer arguments.
    """

    #: Channels of the latent action.
    latent_channels: ClassVar[int]
    #: The networks' total downsampling: the latent is ``H/d x W/d`` (images are padded to multiples of it).
    downsampling: ClassVar[int] = 4
    #: Observation keys the policy reads.
    required_keys: ClassVar[tuple[str, ...]] = ("moving", "style")
    #: VGG-19 layers :meth:`generative_loss` needs (StyleSAC builds its VGG with exactly these).
    vgg_layers: ClassVar[tuple[str, ...]]
    #: Whether :meth:`generative_loss` can take the env's VGG-19 features (``reference``) instead of computing
    #: them: the moving image's :attr:`content_layer` features and the style image's mean/std statistics at
    #: :attr:`style_layers` (what ``NSTEnv(style_loss="meanstd", info_features=True)`` reports).
    reuses_env_features: ClassVar[bool] = False
    content_layer: ClassVar[str] = CONTENT_LAYER["meanstd"]
    style_layers: ClassVar[tuple[str, ...]] = STYLE_LAYERS["meanstd"]
    #: Whether acting needs a style image (``False`` for single-style models, whose style is in the weights).
    needs_style_image: ClassVar[bool] = True

    actor: nn.Module
    builder: nn.Module

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        actor_lr_ratio: float = 0.1,
        n_critics: int = 2,
        adam_betas: tuple[float, float] = (0.5, 0.9),
        latent_dtype: str = "float32",
        critic_style: bool = False,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        keys = set(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else set()
        missing = [key for key in self.required_keys if key not in keys]
        if missing:
            raise ValueError(self.missing_keys_message(missing))
        if critic_style and "style" not in keys:
            raise ValueError("critic_style=True needs a 'style' image in the observation.")
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
        self.critic_style = critic_style
        self._build(lr_schedule)

    def missing_keys_message(self, missing: Collection[str]) -> str:
        """The error for an observation space without some of :attr:`required_keys`.

        :param missing: the keys that are not there.
        """
        return (
            f"{type(self).__name__} needs a Dict observation with the images {list(self.required_keys)}; "
            f"missing: {list(missing)}."
        )

    # ----------------------------------------------------------------- networks
    @abstractmethod
    def make_actor(self) -> nn.Module:
        """A fresh actor network."""

    @abstractmethod
    def make_builder(self) -> nn.Module:
        """A fresh builder network."""

    @abstractmethod
    def make_critic(self) -> nn.Module:
        """A fresh critic ``Q(moving image in [0, 1], latent) -> N x 1``."""

    def loss_weight_parameters(self) -> list[nn.Parameter]:
        """Learned loss weights the generative optimizer updates with the builder (none here)."""
        return []

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.builder = self.make_builder()
        self.critic = nn.ModuleList(self.make_critic() for _ in range(self.n_critics))
        self.critic_target = nn.ModuleList(self.make_critic() for _ in range(self.n_critics))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        lr = lr_schedule(1)
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(), lr=lr * self.actor_lr_ratio, **self.optimizer_kwargs
        )
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr, **self.optimizer_kwargs)
        self.generative_optimizer = self.optimizer_class(
            [
                *self._builder_parameter_groups(lr),
                {"params": list(self.actor.parameters()), "lr": lr * self.actor_lr_ratio, "actor": True},
            ],
            lr=lr,
            **self.optimizer_kwargs,
        )

    def _builder_parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The generative optimizer's group: the builder and the learned loss weights at ``lr`` (the papers')."""
        return [{"params": list(self.builder.parameters()) + self.loss_weight_parameters(), "lr": lr}]

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the policy owns (the temperature's lives in the algorithm)."""
        return [self.actor.optimizer, self.critic.optimizer, self.generative_optimizer]

    @abstractmethod
    def load_released(self, name: str) -> None:
        """Load released actor + builder weights into this policy (the critics keep theirs).

        :param name: a released model's name, or a folder holding weights of the same layout.
        """

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of the latent action for ``height x width`` images.

        :param height: image height in pixels.
        :param width: image width in pixels.
        """
        d = self.downsampling
        return (self.latent_channels, -(-height // d), -(-width // d))

    def latent_space(self) -> spaces.Box:
        """The replay buffer's action space: the latent for the env's image size."""
        _, h, w = self.observation_space["moving"].shape
        return spaces.Box(-np.inf, np.inf, self.latent_shape(h, w), dtype=np.dtype(self.latent_dtype))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("normalize_images")  # the policies scale their images themselves
        data.update(
            actor_lr_ratio=self.actor_lr_ratio,
            n_critics=self.n_critics,
            adam_betas=self.adam_betas,
            latent_dtype=self.latent_dtype,
            critic_style=self.critic_style,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
        )
        data["optimizer_kwargs"] = {k: v for k, v in self.optimizer_kwargs.items() if k != "betas"}
        return data

    def set_training_mode(self, mode: bool) -> None:
        """Put actor, builder and critics in training (``True``) or evaluation mode.

        :param mode: training mode on or off.
        """
        self.actor.train(mode)
        self.builder.train(mode)
        self.critic.train(mode)
        self.training = mode

    # ----------------------------------------------------------------- acting
    @staticmethod
    def images(obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """uint8 observation tensors -> float images in ``[0, 1]`` (same keys).

        :param obs: observation tensors (uint8 images, or floats already in ``[0, 1]``).
        """
        return {k: (v.float() / 255.0 if v.dtype == torch.uint8 else v.float()) for k, v in obs.items()}

    @abstractmethod
    def sample(self, images: Mapping[str, torch.Tensor], deterministic: bool = False) -> LatentSample:
        """A reparameterised latent for each state (the distribution's mean when ``deterministic``).

        :param images: float images in ``[0, 1]`` (``N x 3 x H x W``) under :attr:`required_keys`.
        :param deterministic: use the mean instead of sampling (its log-prob is then at the mean).
        """

    @abstractmethod
    def build(self, sample: LatentSample) -> torch.Tensor:
        """The builder's image for a latent, RGB nominally in ``[0, 1]`` (unclamped), at the input size.

        :param sample: the output of :meth:`sample`.
        """

    def q_values(self, images: Mapping[str, torch.Tensor], latent: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Q-values of every critic, ``n_critics x N``.

        :param images: float images in ``[0, 1]``, ``N x 3 x H x W`` (unpadded): ``moving``, and ``style``
            when the critics read it (``critic_style``).
        :param latent: latent actions, ``N x C x h x w``.
        :param target: use the target critics.
        """
        state = torch.cat([images["moving"], images["style"]], dim=1) if self.critic_style else images["moving"]
        state, _ = pad_to_multiple(state, self.downsampling)
        critics = self.critic_target if target else self.critic
        return torch.stack([q(state, latent.to(state.dtype)).view(-1) for q in critics])

    def act(
        self, obs: Mapping[str, torch.Tensor], deterministic: bool = False, **sample_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, next image in [0, 1])`` for observation tensors (uint8 or float).

        :param obs: observation tensors under :attr:`required_keys` (a batch).
        :param deterministic: use the latent distribution's mean.
        :param sample_kwargs: passed to :meth:`sample` (e.g. :class:`MiniStylerPolicy`'s ``style_code``).
        """
        sample = self.sample(self.images(obs), deterministic, **sample_kwargs)
        return sample.latent, self.build(sample).clamp(0.0, 1.0)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        assert isinstance(observation, dict)
        return self.act(observation, deterministic)[1]

    # ----------------------------------------------------------------- generative learning
    @abstractmethod
    def generative_loss(
        self, images: Mapping[str, torch.Tensor], vgg: VGG19Features, reference: ReferenceFeatures | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The generative objective on replayed states, with a fresh reparameterised latent.

        :param images: float images in ``[0, 1]`` under :attr:`required_keys`.
        :param vgg: frozen VGG-19 computing at least :attr:`vgg_layers`.
        :param reference: the states' VGG-19 targets when already known (policies with
            :attr:`reuses_env_features`): the moving images' :attr:`content_layer` features and the style
            images' statistics at :attr:`style_layers`; computed with ``vgg`` when ``None``.
        :return: the total loss (differentiable in actor and builder) and its terms (for logging).
        """
