"""RLMiniStyler's policy (Hu et al., IJCAI 2025) and its hierarchical style representation contrastive loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from agents.networks import (
    MiniStylerActor,
    MiniStylerBuilder,
    MiniStylerCritic,
    crop_to_size,
    load_ministyler_pretrained,
    pad_to_multiple,
)
from agents.networks.ministyler import StyleCode
from agents.style_sac.policies.base import (
    ActorBuilderPolicy,
    LatentSample,
    ReferenceFeatures,
    gaussian_sample,
    uncertainty_weighted_sum,
)
from nst_env.losses import CONTENT_LAYER, STYLE_LAYERS, content_loss, style_loss, style_statistics
from nst_env.vgg import VGG19Features

#: VGG-19 layers of RLMiniStyler's generative losses (style: relu1_1..relu4_1; content: relu4_1).
MINISTYLER_STYLE_LAYERS = STYLE_LAYERS["meanstd"]
MINISTYLER_CONTENT_LAYER = CONTENT_LAYER["meanstd"]


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
        ``adam_betas``, ``latent_dtype``, ``critic_style``,
        ``optimizer_class``, ``optimizer_kwargs``).
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

    def loss_weight_parameters(self) -> list[nn.Parameter]:
        """The uncertainty weights' log-p."""
        return [self.loss_log_p]

    def load_released(self, name: str = "rlministyler") -> None:
        """Load RLMiniStyler's released actor + builder.

        :param name: ``"rlministyler"`` (the authors' release), ``"rlministyler_ft128"`` (ours, fine-tuned from
            it; :data:`~agents.networks.pretrained.MINISTYLER_MODELS`) or a folder holding ``actor.pth.tar`` and
            ``builder.pth.tar``.
        :raises ValueError: for a policy with ``residual_builder=True`` (the released builder is not residual).
        """
        if self.residual_builder:
            raise ValueError(
                "the released RLMiniStyler builder is not residual: make the policy with "
                "residual_builder=False to load it."
            )
        load_ministyler_pretrained(self.actor, self.builder, name)

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

        :param images: float ``moving`` and ``style`` images in ``[0, 1]``.
        :param vgg: frozen VGG-19 computing at least relu1_1..relu4_1.
        :param reference: the moving images' relu4_1 features and the style images' mean/std statistics, when
            the env already computed them (:class:`~agents.style_sac.buffers.FeatureReplayBuffer`).
        :return: the weighted total and the unweighted terms (for logging).
        """
        sample = self.sample(images)
        out = self.build(sample)
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
