"""Step-wise stylisation with a trained (or released) actor-builder policy.

Inference follows the papers: run actor + builder ``steps`` times, feeding each output back as the moving
image; output ``k`` is "sequence k". The latent is the distribution's mean (deterministic) unless asked.

The steps are run by a :class:`StepRunner`: :class:`TorchRunner` (the policy in PyTorch, under
:func:`torch.inference_mode`, optionally ``channels_last`` and float16) or :class:`agents.inference.onnx.OnnxRunner`
(the exported graphs in ONNX Runtime). The style image does not change over the steps, frames and photos it is
used for, so its encoding by the actor's style branch (:class:`~agents.networks.StyleCode`, two thirds of a
step's cost with a large style image) is computed once (:meth:`StepRunner.prepare`) and reused. The size the style
is encoded at is a choice (:func:`resize_style`, ``agents.stylize --style-size``): a number of pixels for its
longer side, its own size (``None``), or :data:`MATCH_CONTENT`, the longer side of the image being stylised
(:class:`StyleEncodings` then encodes it again only when that side changes). Images smaller than the networks
take (:data:`MIN_SIDE`) are processed stretched to it and resized back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch

from agents.networks import StyleCode, pad_to_multiple
from agents.style_sac.policies import ActorBuilderPolicy, MiniStylerPolicy
from nst_env.images import resize

#: Smallest image side the networks take: their 9x9 reflection-padded input and output convolutions need more
#: than 4 px. Smaller images (and sides: 3 x 700) are stretched to it for processing and resized back.
MIN_SIDE = 5
#: A ``style_size`` meaning: encode the style with its longer side equal to the stylised image's longer side.
MATCH_CONTENT = "content"
#: The size a style image is encoded at: its longer side in px, ``None`` (its own size) or :data:`MATCH_CONTENT`.
StyleSize = int | None | Literal["content"]


def image_to_tensor(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``1 x 3 x H x W`` float in ``[0, 1]`` on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """``1 x 3 x H x W`` (or ``3 x H x W``) float -> ``H x W x 3`` uint8, clamped to ``[0, 1]``."""
    t = tensor.detach().float().clamp(0, 1).squeeze(0).permute(1, 2, 0)
    return (t * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def at_least_min_side(image: np.ndarray) -> np.ndarray:
    """``image`` with every side shorter than :data:`MIN_SIDE` stretched to it (others kept): the smallest
    size the networks take.

    :param image: ``H x W x 3`` uint8.
    """
    height, width = image.shape[:2]
    return resize(image, max(width, MIN_SIDE), max(height, MIN_SIDE))


def resize_style(style: np.ndarray, size: int | None) -> np.ndarray:
    """The style image as it is to be encoded: resized (keeping its aspect) so that its longer side is ``size``.

    :param style: ``h x w x 3`` uint8 style image.
    :param size: the longer side in px (at least 1; the shorter side is rounded, at least 1 px); ``None``: the
        image at its own size (returned as is).
    :raises ValueError: ``size`` below 1.
    """
    if size is None:
        return style
    if size < 1:
        raise ValueError(f"the style size must be a positive number of pixels (or None), got {size}.")
    height, width = style.shape[:2]
    scale = size / max(height, width)
    return resize(style, max(1, round(width * scale)), max(1, round(height * scale)))


class PreparedStyle(NamedTuple):
    """A style image made ready once for a runner, to be reused for every step, frame and photo."""

    #: the style image as the runner takes it: ``1 x 3 x H x W`` in ``[0, 1]`` (PyTorch: on the policy's device,
    #: padded as the policy pads it; ONNX Runtime: a float32 array)
    image: torch.Tensor | np.ndarray
    #: its encoding by the style branch (PyTorch: a :class:`StyleCode`, ``None`` without a style branch; ONNX
    #: Runtime: the style encoder's outputs by name)
    code: StyleCode | dict[str, np.ndarray] | None


@torch.no_grad()
def prepare_style(policy: ActorBuilderPolicy, style: np.ndarray, size: int | None = None) -> PreparedStyle:
    """Encode a style image once with the policy's style branch (:meth:`MiniStylerActor.encode_style
    <agents.networks.MiniStylerActor.encode_style>`, on the image padded as :meth:`MiniStylerPolicy.sample
    <agents.style_sac.policies.MiniStylerPolicy.sample>` pads it).

    :param policy: the policy (its device is used).
    :param style: ``h x w x 3`` uint8 style image (any size; sides under :data:`MIN_SIDE` are stretched to it).
    :param size: the longer side the style is resized to before it is encoded (:func:`resize_style`; ``None``:
        its own size).
    """
    style = at_least_min_side(resize_style(style, size))
    image, _ = pad_to_multiple(image_to_tensor(style, policy.device), policy.downsampling)
    if not isinstance(policy, MiniStylerPolicy):
        return PreparedStyle(image, None)
    policy.set_training_mode(False)
    return PreparedStyle(image, policy.actor.encode_style(image))


class StepRunner(Protocol):
    """What runs the steps of :class:`FrameStylizer`: :class:`TorchRunner` (a policy in PyTorch) or
    :class:`agents.inference.onnx.OnnxRunner` (the exported graphs in ONNX Runtime). ``Moving`` images are whatever
    the runner keeps between steps (a tensor, an array)."""

    #: where it computes (its free memory bounds the image size)
    device: torch.device
    #: whether it stylises with any style image (``False``: the style is in the weights)
    needs_style_image: bool

    def prepare(self, style: np.ndarray, size: int | None = None) -> PreparedStyle:
        """Encode ``h x w x 3`` uint8 ``style`` once (:class:`PreparedStyle`), resized first so that its longer
        side is ``size`` (:func:`resize_style`; ``None``: at its own size)."""

    def load(self, image: np.ndarray) -> Any:
        """The ``H x W x 3`` uint8 ``image`` (sides of at least :data:`MIN_SIDE`) as a moving image."""

    def step(self, moving: Any, style: PreparedStyle | None, frame: int, step: int, deterministic: bool) -> Any:
        """One step: the next moving image.

        :param moving: the moving image (:meth:`load`, or the previous step's output).
        :param style: the prepared style (``None`` for a single-style model).
        :param frame: the frame's index (0 for an image).
        :param step: the step's index in the frame (0-based).
        :param deterministic: use the latent distribution's mean (the papers' inference).
        """

    def image(self, moving: Any) -> np.ndarray:
        """A moving image as ``H x W x 3`` uint8."""


class TorchRunner:
    """A policy's steps in PyTorch, under :func:`torch.inference_mode` (:func:`torch.no_grad` for a recurrent
    policy, whose states stay on the policy for training to use), optionally in ``channels_last`` memory
    format and in float16.

    :param policy: an actor-builder policy (its device is used).
    :param channels_last: keep images and the policy's convolution weights in ``channels_last`` memory format
        (converts the policy's weights in place; outputs equal within float32 rounding).
    :param half: compute in float16 (``torch.autocast``; CUDA only: channel statistics stay float32).
    :raises ValueError: ``half`` on a device other than CUDA.
    """

    def __init__(self, policy: ActorBuilderPolicy, channels_last: bool = False, half: bool = False) -> None:
        if half and policy.device.type != "cuda":
            raise ValueError(f"float16 inference needs a CUDA device, not {policy.device}.")
        self.policy = policy
        self.device = policy.device
        self.needs_style_image = policy.needs_style_image
        self.recurrent = "step" in policy.required_keys
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.half = half
        if channels_last:
            policy.to(memory_format=torch.channels_last)

    @contextmanager
    def context(self) -> Iterator[None]:
        """Inference mode (no_grad for a recurrent policy) and, with ``half``, float16 autocast."""
        no_autograd = torch.no_grad() if self.recurrent else torch.inference_mode()
        precision = torch.autocast(self.device.type, dtype=torch.float16) if self.half else nullcontext()
        with no_autograd, precision:
            self.policy.set_training_mode(False)
            yield

    def prepare(self, style: np.ndarray, size: int | None = None) -> PreparedStyle:
        """:func:`prepare_style` in this runner's precision and memory format.

        :param style: ``h x w x 3`` uint8 style image (any size).
        :param size: the longer side the style is encoded at (:func:`resize_style`; ``None``: its own size).
        """
        with self.context():
            image, code = prepare_style(self.policy, style, size)
            return PreparedStyle(image.contiguous(memory_format=self.memory_format), code)

    def load(self, image: np.ndarray) -> torch.Tensor:
        """``1 x 3 x H x W`` float in ``[0, 1]`` on the policy's device, in the runner's memory format.

        :param image: ``H x W x 3`` uint8.
        """
        return image_to_tensor(image, self.device).contiguous(memory_format=self.memory_format)

    def step(
        self, moving: torch.Tensor, style: PreparedStyle | None, frame: int, step: int, deterministic: bool
    ) -> torch.Tensor:
        """``policy.act`` on the moving image (and the style's image and code); a recurrent policy is told the
        frame and step indices. See :meth:`StepRunner.step` for the arguments."""
        obs = {"moving": moving}
        reuse = {}
        if style is not None:
            obs["style"] = style.image
            reuse = {} if style.code is None else {"style_code": style.code}
        if self.recurrent:
            obs["frame"] = torch.tensor([frame], device=self.device)
            obs["step"] = torch.tensor([step], device=self.device)
        with self.context():
            return self.policy.act(obs, deterministic=deterministic, **reuse)[1].float()

    def image(self, moving: torch.Tensor) -> np.ndarray:
        """:func:`tensor_to_image` of a moving image.

        :param moving: ``1 x 3 x H x W`` float.
        """
        return tensor_to_image(moving)


class StyleEncodings:
    """One style image encoded by a runner at the size ``size`` asks for, for the images it stylises: once for a
    fixed size, and for :data:`MATCH_CONTENT` again only when the stylised images' longer side changes (the last
    encoding is kept: a video's frames, or photos of one size, share it).

    :param runner: what encodes the style and runs the steps.
    :param style: ``h x w x 3`` uint8 style image (any size).
    :param size: the size it is encoded at (:data:`StyleSize`).
    :param max_side: with :data:`MATCH_CONTENT`, the longest side to encode at (``None``: no limit), so that a
        very large photo does not have a small style blown up to its size.
    """

    def __init__(
        self, runner: StepRunner, style: np.ndarray, size: StyleSize = None, max_side: int | None = None
    ) -> None:
        if not (size == MATCH_CONTENT or size is None or (isinstance(size, int) and size >= 1)):
            raise ValueError(f"the style size must be a positive number of pixels, None or {MATCH_CONTENT!r}: {size!r}")
        self.runner, self.image, self.size, self.max_side = runner, style, size, max_side
        self._last: tuple[int | None, PreparedStyle] | None = None

    def side(self, content: np.ndarray) -> int | None:
        """The longer side the style is encoded at for ``content`` (``None``: its own size).

        :param content: the ``H x W x 3`` image to be stylised.
        """
        if self.size != MATCH_CONTENT:
            return self.size  # type: ignore[return-value]
        side = max(content.shape[:2])
        return side if self.max_side is None else min(side, self.max_side)

    def for_content(self, content: np.ndarray) -> PreparedStyle:
        """The style encoded for stylising ``content``.

        :param content: the ``H x W x 3`` image to be stylised.
        """
        side = self.side(content)
        if self._last is None or self._last[0] != side:
            self._last = (side, self.runner.prepare(self.image, side))
        return self._last[1]


class FrameStylizer:
    """Stylise a video frame by frame (or one image): ``max(steps)`` steps per frame, keeping ``steps``.

    Each frame's steps start from the frame itself. A recurrent policy (``RLNSTVideoPolicy``) is told the
    frame and step indices, so that it carries its states over the steps of a frame and from frame to frame
    (its :attr:`~agents.style_sac.policies.RLNSTVideoPolicy.rollout_hidden`); the first frame resets them.
    The style is encoded once (:meth:`StepRunner.prepare`) for all steps and frames.

    :param runner: what runs the steps (:class:`StepRunner`), or an actor-builder policy (run by a
        :class:`TorchRunner`; its device is used).
    :param style: ``h x w x 3`` uint8 style image (any size), or one already prepared by this runner
        (:class:`PreparedStyle` or :class:`StyleEncodings`, to reuse it over several photos); ``None`` for a
        single-style policy, whose style is in its weights.
    :param steps: the steps whose images to keep (1-based, e.g. ``(1, 5, 10)``).
    :param deterministic: use the latent distribution's mean (the papers' inference).
    :param style_size: the size a style image is encoded at (:data:`StyleSize`: its longer side in px, ``None``
        for its own size, :data:`MATCH_CONTENT` for the frames' longer side); a style already prepared keeps
        its own setting.
    """

    def __init__(
        self,
        runner: StepRunner | ActorBuilderPolicy,
        style: np.ndarray | PreparedStyle | StyleEncodings | None,
        steps: Sequence[int],
        deterministic: bool = True,
        style_size: StyleSize = None,
    ) -> None:
        if not steps or min(steps) < 1:
            raise ValueError(f"steps must be positive step numbers, got {list(steps)}.")
        self.runner = TorchRunner(runner) if isinstance(runner, ActorBuilderPolicy) else runner
        if style is None and self.runner.needs_style_image:
            raise ValueError(f"{type(runner).__name__} stylises with any style: it needs a style image.")
        self.steps = sorted(set(steps))
        self.deterministic = deterministic
        self.style = StyleEncodings(self.runner, style, style_size) if isinstance(style, np.ndarray) else style
        self.frame = 0

    def __call__(self, frame: np.ndarray) -> dict[int, np.ndarray]:
        """Stylise the next frame.

        :param frame: ``H x W x 3`` uint8 (any size; sides under :data:`MIN_SIDE` are processed stretched to it).
        :return: ``{step: H x W x 3 uint8 image}`` for every kept step, at the frame's size.
        """
        height, width = frame.shape[:2]
        frame = at_least_min_side(frame)
        style = self.style.for_content(frame) if isinstance(self.style, StyleEncodings) else self.style
        moving = self.runner.load(frame)
        outputs = {}
        for step in range(self.steps[-1]):
            moving = self.runner.step(moving, style, self.frame, step, self.deterministic)
            if step + 1 in self.steps:
                outputs[step + 1] = resize(self.runner.image(moving), width, height)
        self.frame += 1
        return outputs


def stylize_sequence(
    runner: StepRunner | ActorBuilderPolicy,
    content: np.ndarray,
    style: np.ndarray | PreparedStyle | StyleEncodings | None,
    steps: int = 10,
    deterministic: bool = True,
    style_size: StyleSize = None,
) -> list[np.ndarray]:
    """The ``steps`` images of the stylisation sequence, each at the content image's own size.

    :param runner: what runs the steps (:class:`StepRunner`), or an actor-builder policy (its device is used).
    :param content: ``H x W x 3`` uint8 content photo (any size).
    :param style: ``h x w x 3`` uint8 style image (any size), or one prepared once by the runner for several
        photos (:meth:`StepRunner.prepare`, :class:`StyleEncodings`); ``None`` for a single-style policy, whose
        style is in its weights.
    :param steps: how many steps to run.
    :param deterministic: use the latent distribution's mean (the papers' inference).
    :param style_size: the size a style image is encoded at (:data:`StyleSize`); a style already prepared keeps
        its own setting.
    :return: ``steps`` uint8 images ``H x W x 3``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    outputs = FrameStylizer(runner, style, range(1, steps + 1), deterministic, style_size)(content)
    return [outputs[k] for k in sorted(outputs)]
