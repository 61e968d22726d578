"""Actor-builder policies for :class:`agents.style_sac.StyleSAC`.

An actor-builder policy splits SAC's actor in two (SAEC: stochastic actor-executor-critic):

- the **actor** maps the state (moving image + style image) to a Gaussian over a *spatial latent*;
- the **builder** (executor / stylizer / decoder) turns a latent sample into the next image, which is the
  action the environment receives.

The replay buffer stores the latent (the agent's real action); the critics judge ``(moving image, latent)``
(optionally with the style image: ``critic_style=True``). Log-probabilities use one convention throughout:
the **mean** over latent elements, paired with a per-element target entropy (StyleSAC's ``target_entropy``),
so the temperature is independent of the image size (README: deviations from the papers).

- :class:`ActorBuilderPolicy`: what every actor-builder policy shares (optimizers, critics, the latent
  space, acting); a subclass supplies its networks, :meth:`~ActorBuilderPolicy.sample`,
  :meth:`~ActorBuilderPolicy.build` and :meth:`~ActorBuilderPolicy.generative_loss`.
- :class:`MiniStylerPolicy`: RLMiniStyler (Hu et al., IJCAI 2025), any style, 3D latent ``64 x H/4 x W/4``.
- :class:`RLNSTPolicy`: RL-NST (Feng et al., 2023), one style per model, 2D latent ``1 x H/4 x W/4``.
- :class:`RLNSTVideoPolicy`: RL-NST's video model, with step-wise and frame-wise ConvGRUs (``NSTVideo-v0``).
"""

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

from agents.networks import (
    MiniStylerActor,
    MiniStylerBuilder,
    MiniStylerCritic,
    RLNSTActor,
    RLNSTStylizer,
    RLNSTVideoActor,
    RLNSTVideoStylizer,
    crop_to_size,
    denormalize_imagenet,
    load_ministyler_pretrained,
    load_rlnst_pretrained,
    normalize_imagenet,
    pad_to_multiple,
)
from agents.networks.ministyler import StyleCode
from agents.networks.rlnst import Skips
from agents.temporal import compound_perturbation, compound_temporal_loss
from nst_env.losses import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    StyleStats,
    content_loss,
    content_style_layers,
    style_loss,
    style_statistics,
    total_variation,
)
from nst_env.vgg import VGG19Features

#: VGG-19 layers of RLMiniStyler's generative losses (style: relu1_1..relu4_1; content: relu4_1).
MINISTYLER_STYLE_LAYERS = STYLE_LAYERS["meanstd"]
MINISTYLER_CONTENT_LAYER = CONTENT_LAYER["meanstd"]
#: Prefix of the released RL-NST models' names (``"rlnst:blue_swirls"``).
RLNST_PREFIX = "rlnst:"
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
    scale = log_scale.exp()
    latent = mean if deterministic else mean + scale * torch.randn_like(mean)
    log_density = -0.5 * ((latent - mean) / scale).pow(2) - log_scale - 0.5 * math.log(2 * math.pi)
    return latent, log_density.flatten(start_dim=1).mean(dim=1)


def style_contrastive_loss(output_reps: list[torch.Tensor], style_reps: list[torch.Tensor]) -> torch.Tensor:
    """Hierarchical style representation contrastive loss (HSRCL, RLMiniStyler Sec. 3.3; MicroAST's SCL).

    With ``d_l(i, j)`` the mean squared distance between the output ``i``'s and the style image ``j``'s
    representations at level ``l`` (shallow features' mean/std, deep features' mean/std, modulation signals),
    the loss is, as in the released code,

        ``sum_i  sum_l d_l(i, i)  /  sum_l sum_{j != i} d_l(i, j)``

    one ratio per sample of its summed positive to its summed negative distances, summed over the batch.
    Needs a batch of at least 2 (returns 0 otherwise).

    :param output_reps: per level, ``N x D_l`` style representations of the generated images.
    :param style_reps: per level, ``N x D_l`` style representations of the style images.
    """
    n = output_reps[0].shape[0]
    if n < 2:
        return output_reps[0].new_zeros(())
    distances = sum(
        (out.float()[:, None, :] - ref.float()[None, :, :]).pow(2).mean(dim=2)  # N x N
        for out, ref in zip(output_reps, style_reps)
    )
    assert isinstance(distances, torch.Tensor)
    positive = distances.diagonal()
    negative = distances.sum(dim=1) - positive
    return (positive / (negative + 1e-8)).sum()


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
    three optimizers: the actor's (control), the critics', and the generative one (builder + extra
    generative parameters at ``lr``, actor at ``lr * actor_lr_ratio``).

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
    :param loss_on_env_image: compute the generative losses on the image the env sees (clamped to
        ``[0, 1]`` and quantised to uint8, with a straight-through gradient) rather than the raw builder
        output.
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
        loss_on_env_image: bool = True,
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
        self.loss_on_env_image = loss_on_env_image
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
        """A fresh builder (stylizer) network."""

    @abstractmethod
    def make_critic(self) -> nn.Module:
        """A fresh critic ``Q(moving image in [0, 1], latent) -> N x 1``."""

    def generative_parameters(self) -> list[nn.Parameter]:
        """Parameters the generative optimizer updates at the full learning rate (the builder's)."""
        return list(self.builder.parameters())

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
                {"params": self.generative_parameters(), "lr": lr},
                {"params": list(self.actor.parameters()), "lr": lr * self.actor_lr_ratio, "actor": True},
            ],
            lr=lr,
            **self.optimizer_kwargs,
        )

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
            loss_on_env_image=self.loss_on_env_image,
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

    def env_image(self, image: torch.Tensor) -> torch.Tensor:
        """The image the env would make of a builder output, clamped to ``[0, 1]`` and quantised to uint8
        levels, with a straight-through gradient (that of the identity: a hard clamp's zero gradient would
        leave a saturated output stuck); unchanged when ``loss_on_env_image`` is off.

        :param image: builder output, RGB nominally in ``[0, 1]``.
        """
        if not self.loss_on_env_image:
            return image
        return image + (torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0 - image).detach()

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


class MiniStylerPolicy(ActorBuilderPolicy):
    """RLMiniStyler's policy: one actor-builder for any style, 3D latent action ``64 x H/4 x W/4``.

    Hu et al., "Light-weight RL Style Agent for Arbitrary Sequential Neural Style Generation", IJCAI 2025.
    Networks (actor 217,312 + builder 153,843 parameters; twin critics of 165,920 and their targets) are in
    :mod:`agents.networks.ministyler`. Images are RGB in ``[0, 1]`` without normalisation.

    :param observation_space: ``Dict(moving=Box(3,H,W) uint8, style=Box(3,H,W) uint8, ...)``.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics, the builder and the loss weights.
    :param residual_builder: an option of ours for training from scratch: the next image is the moving image
        plus the builder's output, whose last convolution starts at zero, so a fresh agent starts by
        returning the photo and learns what to change (the papers' builder, ``False``, must first learn to
        reconstruct the photo through the latent). The released weights need ``False``.
    :param initial_log_scale: with a fresh actor, start every latent element's log standard deviation here
        (the log-scale head's weights at zero); ``None`` keeps the random initialisation.
    :param kwargs: the other arguments of :class:`ActorBuilderPolicy` (``actor_lr_ratio``, ``n_critics``,
        ``adam_betas``, ``latent_dtype``, ``critic_style``, ``loss_on_env_image``, ``optimizer_class``,
        ``optimizer_kwargs``).
    """

    latent_channels = 64
    vgg_layers = MINISTYLER_STYLE_LAYERS
    reuses_env_features = True

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        residual_builder: bool = False,
        initial_log_scale: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.residual_builder = residual_builder
        self.initial_log_scale = initial_log_scale
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(residual_builder=self.residual_builder, initial_log_scale=self.initial_log_scale)
        return data

    # ----------------------------------------------------------------- networks
    def make_actor(self) -> MiniStylerActor:
        actor = MiniStylerActor()
        if self.initial_log_scale is not None:
            actor.set_initial_log_scale(self.initial_log_scale)
        return actor

    def make_builder(self) -> MiniStylerBuilder:
        builder = MiniStylerBuilder()
        if self.residual_builder:
            nn.init.zeros_(builder.out_conv.weight)
            nn.init.zeros_(builder.out_conv.bias)
        return builder

    def make_critic(self) -> MiniStylerCritic:
        return MiniStylerCritic(observe_style=self.critic_style)

    def _build(self, lr_schedule: Schedule) -> None:
        #: log of the uncertainty weights' p_i (content, style, contrastive), Kendall et al. 2018
        self.loss_log_p = nn.Parameter(torch.zeros(3))
        super()._build(lr_schedule)

    def generative_parameters(self) -> list[nn.Parameter]:
        """The builder's parameters and the uncertainty weights' log-p (updated at the full rate)."""
        return [*self.builder.parameters(), self.loss_log_p]

    def load_released(self, name: str = "rlministyler") -> None:
        """Load RLMiniStyler's released actor + builder.

        :param name: ``"rlministyler"`` (the authors' release) or a folder holding ``actor.pth.tar`` and
            ``builder.pth.tar``.
        :raises ValueError: for a policy with ``residual_builder=True`` (the released builder is not residual).
        """
        if self.residual_builder:
            raise ValueError("the released RLMiniStyler builder is not residual: make the policy with "
                             "residual_builder=False to load it.")
        load_ministyler_pretrained(self.actor, self.builder, None if name == "rlministyler" else name)

    # ----------------------------------------------------------------- acting
    def sample(
        self, images: Mapping[str, torch.Tensor], deterministic: bool = False, style_code: StyleCode | None = None
    ) -> LatentSample:
        """A reparameterised latent for each state (the distribution's mean when ``deterministic``).

        :param images: float images in ``[0, 1]``: ``moving`` and ``style``, ``N x 3 x H x W``.
        :param deterministic: use the mean instead of sampling (its log-prob is then at the mean).
        :param style_code: the style images' code when already encoded (:meth:`MiniStylerActor.encode_style
            <agents.networks.MiniStylerActor.encode_style>` of the padded style), to encode a style once for
            many steps; ``images["style"]`` is then not read.
        """
        moving, size = pad_to_multiple(images["moving"], self.downsampling)
        code = style_code or self.actor.encode_style(pad_to_multiple(images["style"], self.downsampling)[0])
        latent, log_prob = gaussian_sample(*self.actor(moving, code), deterministic)
        return LatentSample(latent, log_prob, code, size, moving if self.residual_builder else None)

    def build(self, sample: LatentSample) -> torch.Tensor:
        """The builder's image for a latent, cropped back to the input size (unclamped); with
        ``residual_builder``, the moving image plus the builder's output.

        :param sample: the output of :meth:`sample` (its context is the :class:`StyleCode`).
        """
        image = self.builder(sample.latent, sample.context)
        if sample.base is not None:
            image = image + sample.base.to(image.dtype)
        return crop_to_size(image, sample.size)

    # ----------------------------------------------------------------- generative learning
    def generative_loss(
        self, images: Mapping[str, torch.Tensor], vgg: VGG19Features, reference: ReferenceFeatures | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """RLMiniStyler's generative objective on replayed states, with a fresh reparameterised latent.

        - content: relu4_1 MSE between the new image and the *replayed moving image*;
        - style: sum over relu1_1..relu4_1 of MSE(channel means) + MSE(channel stds) against the style;
        - contrastive: :func:`style_contrastive_loss` of the new image's style-branch encoding;
        - combined with learned uncertainty weights ``0.5 / p_i^2 * L_i + log(1 + p_i^2)``.

        The new image is :meth:`env_image` of the builder's output (what the env would see).

        :param images: float ``moving`` and ``style`` images in ``[0, 1]``.
        :param vgg: frozen VGG-19 computing at least relu1_1..relu4_1.
        :param reference: the moving images' relu4_1 features and the style images' mean/std statistics, when
            the env already computed them (:class:`~agents.style_sac.buffers.FeatureReplayBuffer`).
        :return: the weighted total and the unweighted terms (for logging).
        """
        sample = self.sample(images)
        out = self.env_image(self.build(sample))
        n = out.shape[0]
        if reference is None:
            with torch.no_grad():
                ref = vgg(torch.cat([images["moving"], images["style"]]), MINISTYLER_STYLE_LAYERS)
                target = style_statistics({k: v[n:] for k, v in ref.items()}, "meanstd", MINISTYLER_STYLE_LAYERS)
            reference = (ref[MINISTYLER_CONTENT_LAYER][:n], target)
        content_target, target = reference
        feats = vgg(out, MINISTYLER_STYLE_LAYERS)
        losses = torch.stack(
            [
                content_loss(feats[MINISTYLER_CONTENT_LAYER], content_target),
                style_loss(feats, target, "meanstd"),
                style_contrastive_loss(
                    self.actor.encode_style(pad_to_multiple(out, self.downsampling)[0]).representations(),
                    sample.context.representations(),
                ),
            ]
        )
        total = uncertainty_weighted_sum(losses, self.loss_log_p)
        names = ("content_loss", "style_loss", "contrastive_loss")
        return total, {name: float(v) for name, v in zip(names, losses.detach())}


class RLNSTPolicy(ActorBuilderPolicy):
    """RL-NST's single-style policy: 2D latent action ``1 x H/4 x W/4`` and a U-Net stylizer.

    Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023. One model per
    style: train it on ``gym.make("NST-v0", style=..., observe_content=True, style_loss="gram")``.

    - Actor (:class:`~agents.networks.RLNSTActor`, 101,376 parameters): a Gaussian whose mean is the channel
      mean of 32 feature maps and whose std is the unbiased std over channels of ``exp(log_scale)`` of the
      other 32, plus ``1e-6`` (the released code's convention).
    - Builder = stylizer (:class:`~agents.networks.RLNSTStylizer`, 77,049 parameters): the latent and the
      actor's encoder skips back to an image. Actor + stylizer: 178,425 parameters, as in the paper.
    - Critics: RL-NST's is 95M parameters; ours reuse RLMiniStyler's critic architecture
      (:class:`~agents.networks.MiniStylerCritic`) with a 1-channel latent input: 93,344 parameters each,
      ending in a plain 1x1 convolution (no ReLU, so Q can be negative like the rewards).

    The networks work on ImageNet-normalised images (the released weights' convention); the env speaks RGB
    in ``[0, 1]``, so the policy normalises its inputs and denormalises the stylizer's output: every method
    takes and returns ``[0, 1]`` images. Fed back through the env, the next moving image is clamped to
    ``[0, 1]`` and quantised to uint8 (the released inference fed the unclamped normalised output back).

    Generative objective (:meth:`generative_loss`), on VGG-19 ``relu1_2, relu2_2, relu3_3, relu4_3`` (the
    env's ``"gram"`` layers): ``style_weight`` x Gram style loss against the style image + ``content_weight``
    x relu2_2 MSE against the episode's *original content photo* (hence the required ``content`` key:
    ``observe_content=True``) + ``tv_weight`` x total variation of the new image (in ``[0, 1]``).

    :param observation_space: ``Dict(moving=..., style=..., content=...)`` channel-first uint8 images.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics and the stylizer.
    :param style_weight: weight of the Gram style loss (paper: 1e5).
    :param content_weight: weight of the relu2_2 content loss (paper: 1).
    :param tv_weight: weight of the total-variation loss (paper: 1e-7).
    :param kwargs: the other arguments of :class:`ActorBuilderPolicy` (``actor_lr_ratio``, ``n_critics``,
        ``adam_betas``, ``latent_dtype``, ``optimizer_class``, ``optimizer_kwargs``).
    """

    latent_channels = 1
    required_keys = ("moving", "style", "content")
    vgg_layers = content_style_layers("gram")
    needs_style_image = False

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        style_weight: float = 1e5,
        content_weight: float = 1.0,
        tv_weight: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        self.style_weight = style_weight
        self.content_weight = content_weight
        self.tv_weight = tv_weight

    def missing_keys_message(self, missing: Collection[str]) -> str:
        message = super().missing_keys_message(missing)
        if "content" in missing:
            message += (
                " RL-NST's content loss compares with the original content photo: make the env with "
                "observe_content=True, e.g. gym.make(\"NST-v0\", style=..., observe_content=True, "
                "style_loss=\"gram\")."
            )
        return message

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(style_weight=self.style_weight, content_weight=self.content_weight, tv_weight=self.tv_weight)
        return data

    # ----------------------------------------------------------------- networks
    def make_actor(self) -> RLNSTActor:
        return RLNSTActor()

    def make_builder(self) -> RLNSTStylizer:
        return RLNSTStylizer()

    def make_critic(self) -> MiniStylerCritic:
        return MiniStylerCritic(latent_channels=self.latent_channels, observe_style=self.critic_style)

    def load_released(self, name: str) -> None:
        """Load a released RL-NST single-style model.

        :param name: ``"rlnst:blue_swirls"`` (also ``fire``, ``maxresdefault``; the prefix is optional) or a
            folder holding ``actor.ckpt`` and ``decoder.ckpt``.
        """
        load_rlnst_pretrained(self.actor, self.builder, name.removeprefix(RLNST_PREFIX))

    # ----------------------------------------------------------------- acting
    def sample(self, images: Mapping[str, torch.Tensor], deterministic: bool = False) -> LatentSample:
        """A reparameterised 1-channel latent for each moving image (the mean when ``deterministic``).

        :param images: float images in ``[0, 1]``; only ``moving`` (``N x 3 x H x W``) is read.
        :param deterministic: use the mean instead of sampling (its log-prob is then at the mean).
        """
        moving, size = pad_to_multiple(normalize_imagenet(images["moving"]), self.downsampling)
        mean, std, skips = self.actor(moving)
        latent, log_prob = gaussian_sample(mean, std.log(), deterministic)
        return LatentSample(latent, log_prob, skips, size)

    def build(self, sample: LatentSample) -> torch.Tensor:
        """The stylizer's image for a latent, RGB nominally in ``[0, 1]`` (unclamped), at the input size.

        :param sample: the output of :meth:`sample` (its context is the actor's encoder skips).
        """
        return denormalize_imagenet(crop_to_size(self.builder(sample.latent, sample.context), sample.size))

    # ----------------------------------------------------------------- generative learning
    def image_losses(
        self, outputs: torch.Tensor, images: Mapping[str, torch.Tensor], vgg: VGG19Features
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """RL-NST's weighted image losses of generated images (Feng et al., 2023).

        :param outputs: generated RGB images in ``[0, 1]``, ``kN x 3 x H x W``: ``k`` batches of ``N``
            (e.g. several steps), each judged against the same ``N`` content and style images.
        :param images: ``content`` and ``style`` images in ``[0, 1]``, ``N x 3 x H x W`` each.
        :param vgg: frozen VGG-19 computing at least :attr:`vgg_layers`.
        :return: the weighted total and the unweighted ``content_loss``, ``style_loss`` and ``tv_loss``.
        """
        n = images["content"].shape[0]
        repeats = outputs.shape[0] // n
        layer = CONTENT_LAYER["gram"]
        with torch.no_grad():
            ref = vgg(torch.cat([images["content"], images["style"]]), self.vgg_layers)
            target = style_statistics({k: v[n:].repeat(repeats, 1, 1, 1) for k, v in ref.items()}, "gram",
                                      STYLE_LAYERS["gram"])
        feats = vgg(outputs, self.vgg_layers)
        terms = {
            "content_loss": content_loss(feats[layer], ref[layer][:n].repeat(repeats, 1, 1, 1)),
            "style_loss": style_loss(feats, target, "gram"),
            "tv_loss": total_variation(outputs),
        }
        total = (
            self.content_weight * terms["content_loss"]
            + self.style_weight * terms["style_loss"]
            + self.tv_weight * terms["tv_loss"]
        )
        return total, terms

    def generative_loss(
        self, images: Mapping[str, torch.Tensor], vgg: VGG19Features, reference: ReferenceFeatures | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """RL-NST's generative objective on replayed states with a fresh reparameterised latent:
        ``style_weight * gram + content_weight * content + tv_weight * tv`` (see :meth:`image_losses`).

        :param images: ``moving``, ``content`` and ``style`` images in ``[0, 1]``.
        :param vgg: frozen VGG-19 computing at least :attr:`vgg_layers`.
        :return: the weighted total and the unweighted terms (for logging).
        """
        total, terms = self.image_losses(self.env_image(self.build(self.sample(images))), images, vgg)
        return total, {name: float(value.detach()) for name, value in terms.items()}


class VideoContext(NamedTuple):
    """What :class:`RLNSTVideoPolicy`'s stylizer needs besides the latent, and the actor's new state."""

    skips: Skips  #: the actor's encoder skips ``(e1, e2, e3)``
    step_hidden: torch.Tensor  #: the actor's step-wise ConvGRU state after this step


class VideoHiddenStates:
    """The recurrent states of :class:`RLNSTVideoPolicy` between calls, for a batch of ``N`` videos.

    Carrying rules (Feng et al., 2023), given each video's ``frame`` and ``step`` indices:

    - the actor's **step-wise** state is carried over the steps of one frame and is zero at a frame's first
      step (``step == 0``);
    - the stylizer's **frame-wise** state of step ``k`` is carried from step ``k`` of the previous frame and
      is zero in a video's first frame (``frame == 0``), or always with ``carry_frames=False`` (the ablation
      "without the frame-wise GRU").

    States are kept (detached) per step index, ``N x 64 x H/4 x W/4`` each; a change of batch size or image
    size starts afresh.

    :param carry_frames: carry the frame-wise state from frame to frame.
    """

    def __init__(self, carry_frames: bool = True) -> None:
        self.carry_frames = carry_frames
        self.step_hidden: torch.Tensor | None = None
        self.frame_hidden: dict[int, torch.Tensor] = {}
        self._images_shape: tuple[int, ...] = ()

    def match(self, images_shape: tuple[int, ...]) -> None:
        """Forget every state if the batch's images changed shape.

        :param images_shape: ``(N, 3, H, W)`` of the moving images about to be stylised.
        """
        if tuple(images_shape) != self._images_shape:
            self.step_hidden, self.frame_hidden, self._images_shape = None, {}, tuple(images_shape)

    def step_input(self, step: torch.Tensor) -> torch.Tensor | None:
        """The actor's input state: the stored one, zeroed where ``step == 0`` (``None``: zeros everywhere).

        :param step: ``N`` step indices within the current frames.
        """
        carried = (step.view(-1) > 0).view(-1, 1, 1, 1)
        if self.step_hidden is None or not bool(carried.any()):
            return None
        return self.step_hidden * carried.to(self.step_hidden.dtype)

    def frame_input(self, frame: torch.Tensor, step: torch.Tensor) -> torch.Tensor | None:
        """The stylizer's input state: step ``k``'s from the previous frame, zero where ``frame == 0``.

        :param frame: ``N`` frame indices within the videos.
        :param step: ``N`` step indices within the current frames.
        :return: ``N x 64 x h x w``, or ``None`` when it would be zeros everywhere.
        """
        if not self.carry_frames:
            return None
        rows = [
            self.frame_hidden[k][i] if f > 0 and k in self.frame_hidden else None
            for i, (f, k) in enumerate(zip(frame.view(-1).tolist(), step.view(-1).long().tolist()))
        ]
        stored = [row for row in rows if row is not None]
        if not stored:
            return None
        return torch.stack([torch.zeros_like(stored[0]) if row is None else row for row in rows])

    def update(self, step: torch.Tensor, step_hidden: torch.Tensor, frame_hidden: torch.Tensor) -> None:
        """Store the states a batch of steps produced.

        :param step: ``N`` step indices the states belong to.
        :param step_hidden: the actor's new step-wise states, ``N x C x h x w``.
        :param frame_hidden: the stylizer's new frame-wise states, ``N x C x h x w``.
        """
        self.step_hidden = step_hidden.detach()
        step = step.view(-1).long()
        for k in step.unique().tolist():
            at_k = (step == k).view(-1, 1, 1, 1)
            previous = self.frame_hidden.get(k, torch.zeros_like(frame_hidden))
            self.frame_hidden[k] = torch.where(at_k, frame_hidden.detach(), previous)


class RLNSTVideoPolicy(RLNSTPolicy):
    """RL-NST's video policy (Feng et al., 2023): :class:`RLNSTPolicy` with recurrent actor and stylizer.

    For ``NSTVideo-v0`` (:class:`nst_env.video.NSTVideoEnv`), whose observation carries ``frame`` and ``step``.

    - Actor :class:`~agents.networks.RLNSTVideoActor`: a step-wise ConvGRU (64 channels, 3x3) whose state
      is carried over the steps of one frame; stylizer :class:`~agents.networks.RLNSTVideoStylizer`: a
      frame-wise ConvGRU whose state is carried from the same step of the previous frame
      (:class:`VideoHiddenStates`). 622,905 parameters (178,425 + 444,480 for the two GRUs).
    - Generative objective: RL-NST's image losses (:meth:`RLNSTPolicy.image_losses`) plus ``temporal_weight``
      x the compound temporal regularisation (:mod:`agents.temporal`): L1 between the stylisation of a
      randomly warped, noisy frame and the warped stylisation of the frame.

    Hidden states in the replay setting (a documented simplification): the replay buffer stores no
    recurrent state. Control updates (critic, actor, temperature) and :meth:`sample`/:meth:`build` run from
    zero states, i.e. every replayed state is treated as a video's first frame and a frame's first step.
    The recurrent paths are trained by the generative update instead, on a *pseudo-video* made from each
    replayed moving image ``x``: two frames, ``x`` and its compound perturbation ``W_f(x) + n``, each
    stylised for ``unroll_steps`` steps with the step-wise state carried over the steps and the frame-wise
    state carried from frame ``x`` to frame ``W_f(x) + n`` at the same step (backpropagated through the
    unroll). The image losses apply to frame ``x``'s steps; the temporal loss compares the two frames at
    every step. Acting (rollouts, ``predict``, the CLI) carries the states as at inference.

    :param observation_space: ``Dict(moving, style, content, frame, step)`` of ``NSTVideo-v0``.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics and the stylizer.
    :param temporal_weight: weight of the compound temporal loss (paper: 1e2).
    :param unroll_steps: stylisation steps per frame of the training pseudo-video.
    :param kwargs: the other arguments of :class:`RLNSTPolicy` (loss weights) and :class:`ActorBuilderPolicy`.
    """

    required_keys = ("moving", "style", "content", "frame", "step")

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        temporal_weight: float = 1e2,
        unroll_steps: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        if unroll_steps < 1:
            raise ValueError(f"unroll_steps must be >= 1, got {unroll_steps}.")
        self.temporal_weight = temporal_weight
        self.unroll_steps = unroll_steps
        #: states of the training rollouts (``act``) and of ``predict`` (e.g. evaluation episodes), kept apart
        self.rollout_hidden = VideoHiddenStates()
        self.predict_hidden = VideoHiddenStates()

    def missing_keys_message(self, missing: Collection[str]) -> str:
        return (
            f"{type(self).__name__} needs the observation of NSTVideo-v0 ({list(self.required_keys)}); missing: "
            f"{list(missing)}. Use gym.make(\"NSTVideo-v0\", style=..., style_loss=\"gram\")."
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(temporal_weight=self.temporal_weight, unroll_steps=self.unroll_steps)
        return data

    # ----------------------------------------------------------------- networks
    def make_actor(self) -> RLNSTVideoActor:
        return RLNSTVideoActor()

    def make_builder(self) -> RLNSTVideoStylizer:
        return RLNSTVideoStylizer()

    def load_released(self, name: str) -> None:
        """Start from a released RL-NST *image* model: its weights fill actor and stylizer; the ConvGRUs keep
        their initialisation (a fresh GRU's state is 0, so the model starts as the image model).

        :param name: see :meth:`RLNSTPolicy.load_released`.
        """
        actor, stylizer = RLNSTActor(), RLNSTStylizer()
        load_rlnst_pretrained(actor, stylizer, name.removeprefix(RLNST_PREFIX))
        for video_network, image_network in ((self.actor, actor), (self.builder, stylizer)):
            video_network.load_state_dict(image_network.state_dict(), strict=False)

    # ----------------------------------------------------------------- acting
    def step_sample(
        self, images: Mapping[str, torch.Tensor], step_hidden: torch.Tensor | None = None, deterministic: bool = False
    ) -> LatentSample:
        """One step's latent, given the actor's step-wise state.

        :param images: float images in ``[0, 1]``; only ``moving`` (``N x 3 x H x W``) is read.
        :param step_hidden: the state after the previous step of these frames (``None``: a frame's first step).
        :param deterministic: use the mean instead of sampling.
        :return: the sample; its context is a :class:`VideoContext` holding the new step-wise state.
        """
        moving, size = pad_to_multiple(normalize_imagenet(images["moving"]), self.downsampling)
        mean, std, skips, step_hidden = self.actor(moving, step_hidden)
        latent, log_prob = gaussian_sample(mean, std.log(), deterministic)
        return LatentSample(latent, log_prob, VideoContext(skips, step_hidden), size)

    def step_build(
        self, sample: LatentSample, frame_hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's image, given the stylizer's frame-wise state.

        :param sample: the output of :meth:`step_sample`.
        :param frame_hidden: the state from the same step of the previous frame (``None``: first frame).
        :return: the image (RGB nominally in ``[0, 1]``, unclamped, at the input size) and the new state.
        """
        image, frame_hidden = self.builder(sample.latent, sample.context.skips, frame_hidden)
        return denormalize_imagenet(crop_to_size(image, sample.size)), frame_hidden

    def sample(self, images: Mapping[str, torch.Tensor], deterministic: bool = False) -> LatentSample:
        """:meth:`step_sample` from a zero state (replayed states; see the class docstring)."""
        return self.step_sample(images, None, deterministic)

    def build(self, sample: LatentSample) -> torch.Tensor:
        """:meth:`step_build` from a zero state (replayed states; see the class docstring)."""
        return self.step_build(sample, None)[0]

    def act(
        self,
        obs: Mapping[str, torch.Tensor],
        deterministic: bool = False,
        hidden: VideoHiddenStates | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent, next image in [0, 1])``, carrying the recurrent states by ``obs["frame"]``, ``obs["step"]``.

        :param obs: observation tensors with ``moving``, ``frame`` and ``step`` (a batch of ``N`` videos).
        :param deterministic: use the latent distribution's mean.
        :param hidden: the states to read and update (default: :attr:`rollout_hidden`).
        """
        hidden = self.rollout_hidden if hidden is None else hidden
        images = self.images(obs)
        frame, step = obs["frame"].view(-1), obs["step"].view(-1)
        hidden.match(tuple(images["moving"].shape))
        sample = self.step_sample(images, hidden.step_input(step), deterministic)
        image, frame_hidden = self.step_build(sample, hidden.frame_input(frame, step))
        hidden.update(step, sample.context.step_hidden, frame_hidden)
        return sample.latent, image.clamp(0.0, 1.0)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # type: ignore[override]
        assert isinstance(observation, dict)
        return self.act(observation, deterministic, self.predict_hidden)[1]

    # ----------------------------------------------------------------- generative learning
    def generative_loss(
        self, images: Mapping[str, torch.Tensor], vgg: VGG19Features, reference: ReferenceFeatures | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """RL-NST's image losses and the compound temporal loss on a two-frame pseudo-video.

        Frame A is the replayed moving image, frame B its compound perturbation (:func:`compound_perturbation`);
        each is stylised for :attr:`unroll_steps` steps (outputs fed back clamped, as the env does), with the
        step-wise state carried over the steps and the frame-wise state from A's step ``k`` to B's step ``k``.
        Total: :meth:`RLNSTPolicy.image_losses` of A's outputs + ``temporal_weight`` x the mean over steps of
        :func:`compound_temporal_loss` (B's output vs A's output warped by the same flow).

        :param images: ``moving``, ``content`` and ``style`` images in ``[0, 1]``.
        :param vgg: frozen VGG-19 computing at least :attr:`vgg_layers`.
        :return: the weighted total and the unweighted terms (for logging).
        """
        perturbed, flow = compound_perturbation(images["moving"])
        frame_hidden: list[torch.Tensor | None] = [None] * self.unroll_steps
        outputs: list[torch.Tensor] = []
        temporal = images["moving"].new_zeros(())
        for is_perturbed, frame in enumerate((images["moving"], perturbed)):
            moving, step_hidden = frame, None
            for k in range(self.unroll_steps):
                sample = self.step_sample({"moving": moving}, step_hidden)
                output, frame_hidden[k] = self.step_build(sample, frame_hidden[k])
                step_hidden = sample.context.step_hidden
                if is_perturbed:
                    temporal = temporal + compound_temporal_loss(output, outputs[k], flow) / self.unroll_steps
                else:
                    outputs.append(output)
                moving = output.clamp(0.0, 1.0)
        total, terms = self.image_losses(torch.cat(outputs), images, vgg)
        terms["temporal_loss"] = temporal
        total = total + self.temporal_weight * temporal
        return total, {name: float(value.detach()) for name, value in terms.items()}


__all__ = [
    "ActorBuilderPolicy",
    "LatentSample",
    "MiniStylerPolicy",
    "RLNSTPolicy",
    "RLNSTVideoPolicy",
    "VideoContext",
    "VideoHiddenStates",
    "gaussian_sample",
    "style_contrastive_loss",
    "uncertainty_weighted_sum",
]
