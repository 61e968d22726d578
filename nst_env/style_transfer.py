"""``NST-v0``: step-wise neural style transfer as a Gymnasium environment."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from nst_env.images import (
    SAMPLE_CONTENT_DIR,
    SAMPLE_STYLE_DIR,
    ImageLike,
    ImagePool,
    load_image,
    resize,
    resolve_sample,
    to_chw,
)
from nst_env.losses import (
    STYLE_LAYERS,
    StyleStats,
    pack_mean_std,
)
from nst_env.reward import PRECISIONS, PerceptualReward
from nst_env.utils import fork_safe_torch_threads, resolve_device

#: ``reset`` options of ``NST-v0``: the images to pin.
RESET_OPTIONS = ("content", "style")


def check_env_arguments(
    image_size: int,
    max_episode_steps: int | None,
    style_loss: str,
    info_features: bool,
    render_mode: str | None,
    precision: str,
    crop_scales: Sequence[float] = (2.0,),
) -> None:
    """Raise ``ValueError`` for an ``NST-v0`` argument out of range (:class:`NSTEnv` lists them).

    :param image_size: side of the square images (an integer >= 16).
    :param max_episode_steps: steps per episode (>= 1) or ``None``.
    :param style_loss: a key of :data:`~nst_env.losses.STYLE_LAYERS`.
    :param info_features: whether ``info`` carries the VGG-19 features (``"meanstd"`` only).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param precision: one of :data:`PRECISIONS`.
    :param crop_scales: a non-empty sequence of numbers in ``[1, 4]`` (see :func:`draw_image`).
    """
    # 16: the deepest loss layers (relu4_*) are image_size/8 wide, and channel std needs >= 2x2 positions.
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}.")
    if style_loss not in STYLE_LAYERS:
        raise ValueError(f"style_loss must be one of {sorted(STYLE_LAYERS)}, got {style_loss!r}.")
    if info_features and style_loss != "meanstd":
        raise ValueError(f"info_features needs style_loss='meanstd', got {style_loss!r}.")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}.")
    if render_mode is not None and render_mode != "rgb_array":
        raise ValueError(f"render_mode must be None or one of ['rgb_array'], got {render_mode!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    scales = crop_scales if isinstance(crop_scales, Sequence) and not isinstance(crop_scales, str) else None
    if not scales or not all(isinstance(x, (int, float)) and 1 <= x <= 4 for x in scales):  # images decode at <= 4s
        raise ValueError(f"crop_scales must be a non-empty sequence of numbers in [1, 4], got {crop_scales!r}.")


def image_pools(
    image_size: int,
    content_dir: str | os.PathLike | None,
    style_dir: str | os.PathLike | None,
    style: ImageLike | None,
) -> tuple[ImagePool, ImagePool]:
    """The content and style pools of an env: the folders given, else the built-in samples; ``style`` pins one style.

    :param image_size: the env's image side (images are decoded at up to 4 times it).
    :param content_dir: folder of content images (``None``: the built-in photos).
    :param style_dir: folder of style images (``None``: the built-in paintings).
    :param style: one style image (path, array or built-in name) instead of ``style_dir``.
    """
    decode_side = 4 * image_size
    content_pool = ImagePool(content_dir or SAMPLE_CONTENT_DIR, max_side=decode_side)
    if style is not None:
        return content_pool, ImagePool(resolve_sample(style), max_side=decode_side)
    return content_pool, ImagePool(style_dir or SAMPLE_STYLE_DIR, max_side=decode_side)


def image_spaces(image_size: int, observe_content: bool) -> tuple[spaces.Dict, spaces.Box]:
    """One env's observation and action spaces (:class:`NSTEnv`'s table).

    :param image_size: the image side.
    :param observe_content: add the content photo to the observation.
    """
    image_box = spaces.Box(0, 255, (3, image_size, image_size), np.uint8)
    keys = {"moving": image_box, "style": image_box}
    if observe_content:
        keys["content"] = image_box
    return spaces.Dict(keys), spaces.Box(0.0, 1.0, (3, image_size, image_size), np.float32)


def draw_image(
    pool: ImagePool,
    pinned: ImageLike | None,
    rng: np.random.Generator,
    image_size: int,
    crop_scales: Sequence[float] = (2.0,),
) -> np.ndarray:
    """An episode's ``3 x s x s`` uint8 image: ``pinned`` resized to ``s`` without cropping, else one drawn from
    ``pool`` with ``rng``, resized to ``ks x ks`` and randomly cropped to ``s x s``. ``k = 2`` is the papers'
    transform; with several ``crop_scales`` each image draws its ``k`` (a crop of a ``4s`` resize shows the image
    at the pixel scale of inference at ``4s``).

    :param pool: the images to draw from.
    :param pinned: an image to use instead (path, array or built-in name), or ``None``.
    :param rng: the env's generator (draws the image, then the scale if there are several, then the crop's corner).
    :param image_size: the side ``s``.
    :param crop_scales: the scales ``k`` in ``[1, 4]`` to draw from (pools decode images at up to ``4s``).
    """
    s = image_size
    if pinned is not None:
        image = load_image(resolve_sample(pinned), max_side=4 * s)
        return to_chw(resize(image, s, s))
    image = pool.draw(rng)
    scale = crop_scales[0] if len(crop_scales) == 1 else crop_scales[int(rng.integers(len(crop_scales)))]
    side = max(s, round(scale * s))
    big = resize(image, side, side)
    top, left = (int(v) for v in rng.integers(0, side - s + 1, size=2))
    return to_chw(big[top : top + s, left : left + s])


def check_reset_options(options: Mapping[str, Any], allowed: Sequence[str] = RESET_OPTIONS) -> None:
    """Raise ``TypeError`` for ``reset`` options that are not a mapping, ``ValueError`` for an unknown one.

    :param options: the options given.
    :param allowed: the options the env takes.
    """
    expected = " and/or ".join(repr(name) for name in allowed)
    if not isinstance(options, Mapping):
        raise TypeError(f"reset options must be a dict with the keys {expected}, got {type(options).__name__}.")
    unknown = set(options) - set(allowed)
    if unknown:
        raise ValueError(f"Unknown reset options {sorted(unknown, key=repr)}; expected {expected}.")


def check_action_values(action: np.ndarray | torch.Tensor, expected: Sequence[int], batched: bool = False) -> None:
    """Raise ``ValueError`` unless ``action`` has the shape ``expected`` and only finite values, ``TypeError``
    for values that are not real numbers (complex, text, dates, objects).

    :param action: the action (a numpy array, or a torch tensor: the check then waits for its device).
    :param expected: the shape it must have.
    :param batched: a vector env's batch of actions (for the message).
    """
    if tuple(action.shape) != tuple(expected):
        raise ValueError(
            f"Expected {'a batch of actions' if batched else 'an action'} of shape {tuple(expected)} (the next "
            f"image{'s' if batched else ''}, channel-first RGB in [0, 1]), got shape {tuple(action.shape)}."
        )
    real = not action.is_complex() if isinstance(action, torch.Tensor) else action.dtype.kind in "biuf"
    if not real:
        raise TypeError(
            f"Expected {'actions' if batched else 'an action'} of real numbers (RGB in [0, 1]), got dtype "
            f"{action.dtype}."
        )
    finite = bool(torch.isfinite(action).all()) if isinstance(action, torch.Tensor) else np.isfinite(action).all()
    if not finite:
        raise ValueError(
            f"The action{'s contain' if batched else ' contains'} NaN or infinite values; expected "
            f"{'RGB images' if batched else 'an RGB image'} in [0, 1]."
        )


def quantise(action: np.ndarray) -> np.ndarray:
    """An action (RGB in ``[0, 1]``, clipped) as the uint8 image it becomes (round half to even)."""
    return np.rint(np.clip(action, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_frame(content: np.ndarray, style: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """``H x 3W x 3`` uint8: content | style | moving, from three ``3 x H x W`` images."""
    return np.concatenate([content, style, moving], axis=2).transpose(1, 2, 0).copy()


class NSTCore:
    """What :class:`NSTEnv` and :class:`~nst_env.vector.NSTVectorEnv` share: their arguments (checked; the table of
    :class:`NSTEnv`), image pools, VGG-19 reward pass (:class:`PerceptualReward`) and one env's spaces.

    :param image_size: side of the square observation and action images (>= 16).
    :param max_episode_steps: steps per episode (``None``: the env never truncates by itself).
    :param style_loss: ``"meanstd"`` (RLMiniStyler) or ``"gram"`` (RL-NST).
    :param reward_scale: reward = ``-reward_scale * style_loss``.
    :param content_dir: folder of content images, searched recursively (``None``: the built-in photos).
    :param style_dir: folder of style images, searched recursively (``None``: the built-in paintings).
    :param style: pin one style (path, array, or a built-in name such as ``"starry_night"``).
    :param observe_content: add the content photo to the observation.
    :param device: where VGG-19 runs: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    :param vgg_weights: explicit VGG-19 weights path (see :mod:`nst_env.vgg`).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param info_features: add the VGG-19 features to ``info`` (``"meanstd"`` only).
    :param precision: the reward pass's precision, ``"float32"`` or ``"bfloat16"``.
    :param crop_scales: the scales an episode's drawn images are resized by (times ``image_size``) before the
        random crop; each image draws one when there are several (:func:`draw_image`).
    """

    def __init__(
        self,
        image_size: int = 256,
        max_episode_steps: int | None = 10,
        style_loss: str = "meanstd",
        reward_scale: float = 1.0,
        content_dir: str | os.PathLike | None = None,
        style_dir: str | os.PathLike | None = None,
        style: ImageLike | None = None,
        observe_content: bool = False,
        device: torch.device | str = "auto",
        vgg_weights: str | os.PathLike | None = None,
        render_mode: str | None = None,
        info_features: bool = False,
        precision: str = "float32",
        crop_scales: Sequence[float] = (2.0,),
    ) -> None:
        check_env_arguments(
            image_size, max_episode_steps, style_loss, info_features, render_mode, precision, crop_scales
        )
        self.crop_scales = tuple(float(x) for x in crop_scales)
        self.image_size = int(image_size)
        self.max_episode_steps = max_episode_steps
        self.style_loss_kind = style_loss
        self.reward_scale = float(reward_scale)
        self.observe_content = observe_content
        self.render_mode = render_mode
        self.info_features = info_features
        self.precision = precision
        self.device = resolve_device(device)
        fork_safe_torch_threads()
        self.content_pool, self.style_pool = image_pools(self.image_size, content_dir, style_dir, style)
        self.reward = PerceptualReward(style_loss, self.device, vgg_weights, precision)
        self.vgg = self.reward.vgg
        self._content_layer = self.reward.content_layer
        self.observation_space, self.action_space = image_spaces(self.image_size, observe_content)

    @property
    def vgg_source(self) -> str:
        """Where the env's VGG-19 weights came from (a learner sharing :attr:`info_features` must match it)."""
        return self.vgg.source


class NSTEnv(NSTCore, gym.Env):
    """Step-wise neural style transfer (RL-NST, Feng et al. 2023; RLMiniStyler, Hu et al. 2025).

    The agent repaints a "moving" image, initially the content photo, one step at a time; each step is
    rewarded by how close the new image's style is to the style image, measured with a frozen VGG-19. Early
    steps keep the content, later ones add style: the user picks the step they like.

    ## Observation space
    ``Dict`` of channel-first uint8 images in ``[0, 255]``:

    | key | space | meaning |
    |---|---|---|
    | ``moving`` | ``Box(0, 255, (3, H, W), uint8)`` | the current image (the content photo after ``reset``) |
    | ``style`` | ``Box(0, 255, (3, H, W), uint8)`` | the episode's style image |
    | ``content`` | ``Box(0, 255, (3, H, W), uint8)`` | the episode's content photo; only with ``observe_content=True`` |

    ## Action space
    ``Box(0, 1, (3, H, W), float32)``: the next moving image, RGB in ``[0, 1]``. Values outside ``[0, 1]``
    are clipped; NaN/inf or a wrong shape raise ``ValueError``. The image is quantised to uint8 (what the
    next observation shows) before the reward is computed, so reward and observation agree exactly.

    ## Reward
    ``-reward_scale * style_loss(next_moving, style)`` with ``style_loss="meanstd"`` (sum over VGG-19
    relu1_1..relu4_1 of MSE of channel means + MSE of channel stds; RLMiniStyler) or ``"gram"`` (sum over
    relu1_2, relu2_2, relu3_3, relu4_3 of Gram-matrix MSE, Gram normalised by C*H*W; RL-NST). ``info`` holds
    the unscaled ``style_loss``, the ``content_loss`` (feature MSE at relu4_1, or relu2_2 for ``"gram"``)
    against the episode's content photo, and ``step`` (1-based index of the step just taken).

    With ``info_features=True`` (``"meanstd"`` only), ``reset`` and ``step`` infos also carry the VGG-19
    features the env computed anyway, so that a learner need not compute them again: ``vgg_content``, the
    relu4_1 features of the observed moving image (``512 x H/8 x W/8`` float16), and
    ``vgg_style_statistics``, the style image's channel means and stds at relu1_1..relu4_1
    (:func:`~nst_env.losses.pack_mean_std`, 1,920 float32). :class:`~agents.StyleSAC` turns this on.

    ## Starting state
    ``reset`` draws a content photo and a style image with ``self.np_random`` (so ``reset(seed=...)`` is
    reproducible), resizes each to ``2*image_size`` square and randomly crops ``image_size`` (the papers'
    training transform; ``crop_scales`` changes the 2, or draws it per image). ``options={"content": PATH_OR_ARRAY, "style": PATH_OR_ARRAY}`` pins either image
    (arrays are ``H x W x 3`` uint8); a pinned image is resized to ``image_size`` without cropping.

    ## Episode end
    Never ``terminated``; ``truncated`` after ``max_episode_steps`` steps (default 10). Under ``gym.make``
    Gymnasium's ``TimeLimit`` applies the limit, so ``gym.make("NST-v0", max_episode_steps=N)`` works.

    ## Arguments
    | argument | default | meaning |
    |---|---|---|
    | ``image_size`` | 256 | side of the square observation and action images |
    | ``max_episode_steps`` | 10 | steps per episode (``None``: the env never truncates by itself) |
    | ``style_loss`` | ``"meanstd"`` | ``"meanstd"`` (RLMiniStyler) or ``"gram"`` (RL-NST) |
    | ``reward_scale`` | 1.0 | reward = ``-reward_scale * style_loss`` |
    | ``content_dir`` | built-in photos | folder of content images, searched recursively (e.g. MS-COCO) |
    | ``style_dir`` | built-in paintings | folder of style images, searched recursively (e.g. WikiArt) |
    | ``style`` | ``None`` | pin one style (path, array, or a built-in name such as ``"starry_night"``) |
    | ``observe_content`` | ``False`` | add the content photo to the observation (RL-NST's content loss) |
    | ``device`` | ``"auto"`` | where VGG-19 runs: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... |
    | ``vgg_weights`` | ``None`` | explicit VGG-19 weights path (see :mod:`nst_env.vgg`) |
    | ``render_mode`` | ``None`` | ``"rgb_array"``: content, style and moving image side by side |
    | ``info_features`` | ``False`` | add the VGG-19 features above to ``info`` (``"meanstd"`` only) |
    | ``precision`` | ``"float32"`` | ``"bfloat16"``: the reward's VGG-19 pass under ``torch.autocast`` (losses summed in float32) |
    | ``crop_scales`` | ``(2.0,)`` | drawn images are resized to ``k * image_size`` (``k`` drawn from these) and cropped |

    ## Example
    An episode's first step, with the photo itself as the action (tests/test_env.py runs this example)::

        >>> import gymnasium as gym
        >>> import nst_env
        >>> env = gym.make("NST-v0", image_size=32, device="cpu")
        >>> obs, info = env.reset(seed=0)
        >>> {key: image.shape for key, image in obs.items()}, info
        ({'moving': (3, 32, 32), 'style': (3, 32, 32)}, {'step': 0})
        >>> obs, reward, terminated, truncated, info = env.step(obs["moving"] / 255.0)
        >>> sorted(info), info["step"], bool(reward < 0), terminated, truncated
        (['content_loss', 'step', 'style_loss'], 1, True, False, False)

    Many envs at once: ``gym.make_vec("NST-v0", num_envs=N)`` builds :class:`~nst_env.vector.NSTVectorEnv`, which
    runs the N envs' reward passes as one batch on one VGG-19.

    ## Version History
    * v0: the first version (rl-nst 0.1.0): style losses ``"meanstd"`` (RLMiniStyler) and ``"gram"`` (RL-NST),
      the content photo in the observation on request (``observe_content``), the VGG-19 features in ``info`` on
      request (``info_features``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    # The episode (reset() sets it): the images, the VGG-19 targets, the step count.
    _content: np.ndarray | None = None
    _style: np.ndarray | None = None
    _moving: np.ndarray | None = None
    _style_target: StyleStats = {}  # replaced by reset(), never changed in place
    _packed_style: np.ndarray | None = None  # the episode's style statistics for info, on the host
    _content_target: torch.Tensor | None = None
    _steps = 0

    # ------------------------------------------------------------------ data
    def _pick(self, pool: ImagePool, pinned: ImageLike | None) -> np.ndarray:
        return draw_image(pool, pinned, self.np_random, self.image_size, self.crop_scales)

    def _to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        return batch.float().div_(255.0)

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = {} if options is None else options
        check_reset_options(options)
        # both images first: a refused option leaves the episode as it was
        content = self._pick(self.content_pool, options.get("content"))
        style = self._pick(self.style_pool, options.get("style"))
        self._content, self._style = content, style
        self._moving = self._content
        self._steps = 0
        feats = self.reward.features(np.stack([self._content, self._style]))
        self._content_target, self._style_target = self.reward.targets(
            {k: v[:1] for k, v in feats.items()}, {k: v[1:] for k, v in feats.items()}
        )
        self._packed_style = None
        return self._observation(), self._feature_info({"step": 0}, self._content_target)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._moving is None:
            raise RuntimeError("Call reset() before step().")
        action = np.asarray(action)
        check_action_values(action, self.action_space.shape)
        self._moving = quantise(action)
        self._steps += 1
        feats = self.reward.features(self._moving[None])
        assert self._content_target is not None
        losses = self.reward.losses(feats, self._style_target, self._content_target)
        s_loss, c_loss = losses[:, 0].tolist()  # one device-to-host copy (and sync) for both
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"style_loss": s_loss, "content_loss": c_loss, "step": self._steps}
        return (
            self._observation(),
            -self.reward_scale * s_loss,
            False,
            truncated,
            self._feature_info(info, feats[self._content_layer]),
        )

    def _feature_info(self, info: dict[str, Any], moving_content: torch.Tensor) -> dict[str, Any]:
        """``info`` plus, with ``info_features``, the moving image's content features and the style statistics
        (copied from the device once per episode, the moving image's features once per step)."""
        if not self.info_features:
            return info
        info["vgg_content"] = moving_content[0].to(torch.float16).cpu().numpy()
        if self._packed_style is None:
            self._packed_style = pack_mean_std(self._style_target)[0].cpu().numpy()
        info["vgg_style_statistics"] = self._packed_style.copy()  # a host copy: infos must not share data
        return info

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"moving": self._moving.copy(), "style": self._style.copy()}  # type: ignore[union-attr]
        if self.observe_content:
            obs["content"] = self._content.copy()  # type: ignore[union-attr]
        return obs

    def render(self) -> np.ndarray | None:
        """``H x 3W x 3`` uint8: content | style | moving (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array" or self._moving is None:
            return None
        return render_frame(self._content, self._style, self._moving)  # type: ignore[arg-type]


def make_nst_env(**kwargs: Any) -> NSTEnv:
    """``NST-v0``'s entry point: an :class:`NSTEnv` without its own episode limit, since Gymnasium's ``TimeLimit``
    applies ``max_episode_steps`` (under ``gym.make`` and ``gym.make_vec``'s ``"sync"`` and ``"async"`` modes, which
    both take ``max_episode_steps`` for the ``TimeLimit`` and do not pass it on).

    :param kwargs: :class:`NSTEnv`'s arguments.
    """
    return NSTEnv(**{"max_episode_steps": None, **kwargs})


make_nst_env.metadata = NSTEnv.metadata  # type: ignore[attr-defined]  # gym.make reads the render modes here
