"""RL-NST's video policy (Feng et al., 2023) and its recurrent state: the step-wise and frame-wise ConvGRUs' states
between calls (:class:`VideoHiddenStates`) and what the builder needs besides the latent (:class:`VideoContext`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from agents.networks import (
    RLNSTActor,
    RLNSTBuilder,
    RLNSTVideoActor,
    RLNSTVideoBuilder,
    crop_to_size,
    denormalize_imagenet,
    load_rlnst_pretrained,
    normalize_imagenet,
    pad_to_multiple,
)
from agents.networks.pretrained import RLNST_PREFIX
from agents.networks.rlnst import Skips
from agents.style_sac.policies.base import LatentSample, ReferenceFeatures, gaussian_sample
from agents.style_sac.policies.rlnst import RLNSTPolicy
from agents.style_sac.temporal import compound_perturbation, compound_temporal_loss
from nst_env.vgg import VGG19Features


class VideoContext(NamedTuple):
    """What :class:`RLNSTVideoPolicy`'s builder needs besides the latent, and the actor's new state."""

    skips: Skips  #: the actor's encoder skips ``(e1, e2, e3)``
    step_hidden: torch.Tensor  #: the actor's step-wise ConvGRU state after this step


class VideoHiddenStates:
    """The recurrent states of :class:`RLNSTVideoPolicy` between calls, for a batch of ``N`` videos.

    Carrying rules (Feng et al., 2023), given each video's ``frame`` and ``step`` indices:

    - the actor's **step-wise** state is carried over the steps of one frame and is zero at a frame's first
      step (``step == 0``);
    - the builder's **frame-wise** state of step ``k`` is carried from step ``k`` of the previous frame and
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
        """The builder's input state: step ``k``'s from the previous frame, zero where ``frame == 0``.

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
        :param frame_hidden: the builder's new frame-wise states, ``N x C x h x w``.
        """
        self.step_hidden = step_hidden.detach()
        step = step.view(-1).long()
        for k in step.unique().tolist():
            at_k = (step == k).view(-1, 1, 1, 1)
            previous = self.frame_hidden.get(k, torch.zeros_like(frame_hidden))
            self.frame_hidden[k] = torch.where(at_k, frame_hidden.detach(), previous)


class RLNSTVideoPolicy(RLNSTPolicy):
    """RL-NST's video policy (Feng et al., 2023): :class:`RLNSTPolicy` with recurrent actor and builder.

    For ``NSTVideo-v0`` (:class:`nst_env.video.NSTVideoEnv`), whose observation carries ``frame`` and ``step``.

    - Actor :class:`~agents.networks.RLNSTVideoActor`: a step-wise ConvGRU (64 channels, 3x3) whose state
      is carried over the steps of one frame; builder :class:`~agents.networks.RLNSTVideoBuilder`: a
      frame-wise ConvGRU whose state is carried from the same step of the previous frame
      (:class:`VideoHiddenStates`). 622,905 parameters (178,425 + 444,480 for the two GRUs).
    - Generative objective: RL-NST's image losses (:meth:`RLNSTPolicy.image_losses`) plus ``temporal_weight``
      x the compound temporal regularisation (:mod:`agents.style_sac.temporal`): L1 between the stylisation of a
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
    :param lr_schedule: learning-rate schedule of the critics and the builder.
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
            f'{list(missing)}. Use gym.make("NSTVideo-v0", style=..., style_loss="gram").'
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(temporal_weight=self.temporal_weight, unroll_steps=self.unroll_steps)
        return data

    # ----------------------------------------------------------------- networks
    def make_actor(self) -> RLNSTVideoActor:
        return RLNSTVideoActor()

    def make_builder(self) -> RLNSTVideoBuilder:
        return RLNSTVideoBuilder()

    def load_released(self, name: str) -> None:
        """Start from a released RL-NST *image* model: its weights fill actor and builder; the ConvGRUs keep
        their initialisation (a fresh GRU's state is 0, so the model starts as the image model).

        :param name: see :meth:`RLNSTPolicy.load_released`.
        """
        actor, builder = RLNSTActor(), RLNSTBuilder()
        load_rlnst_pretrained(actor, builder, name.removeprefix(RLNST_PREFIX))
        for video_network, image_network in ((self.actor, actor), (self.builder, builder)):
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
        """One step's image, given the builder's frame-wise state.

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
