"""``NST-v0``: step-wise neural style transfer as a Gymnasium environment."""

from __future__ import annotations

import os
from collections.abc import Sequence
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
    CONTENT_LAYER,
    STYLE_LAYERS,
    content_loss,
    content_style_layers,
    pack_mean_std,
    style_loss,
    style_statistics,
)
from nst_env.utils import fork_safe_torch_threads, resolve_device
from nst_env.vgg import VGG19Features


class NSTEnv(gym.Env):
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
    training transform). ``options={"content": PATH_OR_ARRAY, "style": PATH_OR_ARRAY}`` pins either image
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

    ## Version History
    * v0: the first version (rl-nst 0.1.0): style losses ``"meanstd"`` (RLMiniStyler) and ``"gram"`` (RL-NST),
      the content photo in the observation on request (``observe_content``), the VGG-19 features in ``info`` on
      request (``info_features``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

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
    ) -> None:
        # 16: the deepest loss layers (relu4_*) are image_size/8 wide, and channel std needs >= 2x2 positions.
        if not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}.")
        if style_loss not in STYLE_LAYERS:
            raise ValueError(f"style_loss must be one of {sorted(STYLE_LAYERS)}, got {style_loss!r}.")
        if info_features and style_loss != "meanstd":
            raise ValueError(f"info_features needs style_loss='meanstd', got {style_loss!r}.")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}.")
        self.image_size = int(image_size)
        self.max_episode_steps = max_episode_steps
        self.style_loss_kind = style_loss
        self.reward_scale = float(reward_scale)
        self.observe_content = observe_content
        self.render_mode = render_mode
        self.info_features = info_features
        self.device = resolve_device(device)
        fork_safe_torch_threads()

        decode_side = 4 * self.image_size
        self.content_pool = ImagePool(content_dir or SAMPLE_CONTENT_DIR, max_side=decode_side)
        if style is not None:
            self.style_pool = ImagePool(resolve_sample(style), max_side=decode_side)
        else:
            self.style_pool = ImagePool(style_dir or SAMPLE_STYLE_DIR, max_side=decode_side)

        self._style_layers = STYLE_LAYERS[style_loss]
        self._content_layer = CONTENT_LAYER[style_loss]
        self.vgg = VGG19Features(content_style_layers(style_loss), weights=vgg_weights, device=self.device)

        image_box = spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        keys = {"moving": image_box, "style": image_box}
        if observe_content:
            keys["content"] = image_box
        self.observation_space = spaces.Dict(keys)
        self.action_space = spaces.Box(0.0, 1.0, (3, self.image_size, self.image_size), np.float32)

        self._content: np.ndarray | None = None
        self._style: np.ndarray | None = None
        self._moving: np.ndarray | None = None
        self._style_target: dict[str, tuple[torch.Tensor, ...]] = {}
        self._packed_style: np.ndarray | None = None  # the episode's style statistics for info, on the host
        self._content_target: torch.Tensor | None = None
        self._steps = 0

    # ------------------------------------------------------------------ data
    def _training_crop(self, image: np.ndarray) -> np.ndarray:
        """The papers' transform: resize to ``2s x 2s``, then a random ``s x s`` crop from ``np_random``."""
        s = self.image_size
        big = resize(image, 2 * s, 2 * s)
        top, left = (int(v) for v in self.np_random.integers(0, s + 1, size=2))
        return big[top : top + s, left : left + s]

    def _pick(self, pool: ImagePool, pinned: ImageLike | None) -> np.ndarray:
        if pinned is not None:
            image = load_image(resolve_sample(pinned), max_side=4 * self.image_size)
            return to_chw(resize(image, self.image_size, self.image_size))
        return to_chw(self._training_crop(pool.draw(self.np_random)))

    def _to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
        return batch.float().div_(255.0)

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"content", "style"}
        if unknown:
            raise ValueError(f"Unknown reset options {sorted(unknown)}; expected 'content' and/or 'style'.")
        self._content = self._pick(self.content_pool, options.get("content"))
        self._style = self._pick(self.style_pool, options.get("style"))
        self._moving = self._content
        self._steps = 0
        with torch.no_grad():
            feats = self.vgg(self._to_tensor([self._content, self._style]))
        self._content_target = feats[self._content_layer][:1]
        self._style_target = style_statistics(
            {k: v[1:] for k, v in feats.items()}, self.style_loss_kind, self._style_layers
        )
        self._packed_style = None
        return self._observation(), self._feature_info({"step": 0}, self._content_target)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._moving is None:
            raise RuntimeError("Call reset() before step().")
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"Expected an action of shape {self.action_space.shape} (the next image, channel-first RGB in "
                f"[0, 1]), got shape {action.shape}."
            )
        if not np.isfinite(action).all():
            raise ValueError("The action contains NaN or infinite values; expected an RGB image in [0, 1].")
        self._moving = np.rint(np.clip(action, 0.0, 1.0) * 255.0).astype(np.uint8)
        self._steps += 1
        with torch.no_grad():
            feats = self.vgg(self._to_tensor([self._moving]))
            assert self._content_target is not None
            losses = torch.stack(
                [
                    style_loss(feats, self._style_target, self.style_loss_kind),
                    content_loss(feats[self._content_layer], self._content_target),
                ]
            )
            s_loss, c_loss = losses.tolist()  # one device-to-host copy (and sync) for both
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"style_loss": s_loss, "content_loss": c_loss, "step": self._steps}
        return (
            self._observation(),
            -self.reward_scale * s_loss,
            False,
            truncated,
            self._feature_info(info, feats[self._content_layer]),
        )

    @property
    def vgg_source(self) -> str:
        """Where the env's VGG-19 weights came from (a learner sharing :attr:`info_features` must match it)."""
        return self.vgg.source

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
        return np.concatenate([self._content, self._style, self._moving], axis=2).transpose(1, 2, 0).copy()  # type: ignore[list-item]
