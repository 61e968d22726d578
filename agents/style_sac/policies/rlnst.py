"""RL-NST's single-style policy (Feng et al., 2023)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule

from agents.networks import (
    MiniStylerCritic,
    RLNSTActor,
    RLNSTBuilder,
    crop_to_size,
    denormalize_imagenet,
    load_rlnst_pretrained,
    normalize_imagenet,
    pad_to_multiple,
)
from agents.networks.pretrained import RLNST_PREFIX
from agents.style_sac.policies.base import ActorBuilderPolicy, LatentSample, ReferenceFeatures, gaussian_sample
from nst_env.losses import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    content_loss,
    content_style_layers,
    style_loss,
    style_statistics,
    total_variation,
)
from nst_env.vgg import VGG19Features


class RLNSTPolicy(ActorBuilderPolicy):
    """RL-NST's single-style policy: 2D latent action ``1 x H/4 x W/4`` and a U-Net builder.

    Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023. One model per
    style: train it on ``gym.make("NST-v0", style=..., observe_content=True, style_loss="gram")``.

    - Actor (:class:`~agents.networks.RLNSTActor`, 101,376 parameters): a Gaussian whose mean is the channel
      mean of 32 feature maps and whose std is the unbiased std over channels of ``exp(log_scale)`` of the
      other 32, plus ``1e-6`` (the released code's convention).
    - Builder (:class:`~agents.networks.RLNSTBuilder`, 77,049 parameters): the latent and the
      actor's encoder skips back to an image. Actor + builder: 178,425 parameters, as in the paper.
    - Critics: RL-NST's is 95M parameters; ours reuse RLMiniStyler's critic architecture
      (:class:`~agents.networks.MiniStylerCritic`) with a 1-channel latent input: 93,344 parameters each,
      ending in a plain 1x1 convolution (no ReLU, so Q can be negative like the rewards).

    The networks work on ImageNet-normalised images (the released weights' convention); the env speaks RGB
    in ``[0, 1]``, so the policy normalises its inputs and denormalises the builder's output: every method
    takes and returns ``[0, 1]`` images. Fed back through the env, the next moving image is clamped to
    ``[0, 1]`` and quantised to uint8 (the released inference fed the unclamped normalised output back).

    Generative objective (:meth:`generative_loss`), on VGG-19 ``relu1_2, relu2_2, relu3_3, relu4_3`` (the
    env's ``"gram"`` layers): ``style_weight`` x Gram style loss against the style image + ``content_weight``
    x relu2_2 MSE against the episode's *original content photo* (hence the required ``content`` key:
    ``observe_content=True``) + ``tv_weight`` x total variation of the new image (in ``[0, 1]``).

    :param observation_space: ``Dict(moving=..., style=..., content=...)`` channel-first uint8 images.
    :param action_space: the env's action space, ``Box(0, 1, (3, H, W), float32)``: the built image.
    :param lr_schedule: learning-rate schedule of the critics and the builder.
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
                'observe_content=True, e.g. gym.make("NST-v0", style=..., observe_content=True, '
                'style_loss="gram").'
            )
        return message

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(style_weight=self.style_weight, content_weight=self.content_weight, tv_weight=self.tv_weight)
        return data

    # ----------------------------------------------------------------- networks
    def make_actor(self) -> RLNSTActor:
        return RLNSTActor()

    def make_builder(self) -> RLNSTBuilder:
        return RLNSTBuilder()

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
        """The builder's image for a latent, RGB nominally in ``[0, 1]`` (unclamped), at the input size.

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
            target = style_statistics(
                {k: v[n:].repeat(repeats, 1, 1, 1) for k, v in ref.items()}, "gram", STYLE_LAYERS["gram"]
            )
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
        total, terms = self.image_losses(self.build(self.sample(images)), images, vgg)
        return total, {name: float(value.detach()) for name, value in terms.items()}
