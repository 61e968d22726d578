"""``NST-v0`` batched: N episodes on one VGG-19, each step's rewards in one pass (Gymnasium's ``vector_entry_point``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from nst_env.images import ImageLike
from nst_env.losses import pack_mean_std
from nst_env.style_transfer import (
    RESET_OPTIONS,
    NSTCore,
    check_action_values,
    check_reset_options,
    draw_image,
    quantise,
    render_frame,
)

#: ``array_type`` values: what ``reset`` and ``step`` take and return.
ARRAY_TYPES = ("numpy", "torch")
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}

Array = Any  # a numpy array (array_type="numpy") or a torch tensor on the env's device (array_type="torch")


def to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """float32/float16 tensors as numpy arrays, copied from their device in one transfer: their bytes are packed
    into one buffer on the device first (on the CPU they are only viewed).

    :param tensors: the tensors, on one device.
    """
    if all(t.device.type == "cpu" for t in tensors):
        return [t.detach().contiguous().numpy() for t in tensors]
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())  # aligned views of the buffer
    flat = torch.cat([tensors[i].detach().contiguous().view(-1).view(torch.uint8) for i in order]).cpu().numpy()
    out: list[np.ndarray] = [np.empty(0)] * len(tensors)
    start = 0
    for i in order:
        size = tensors[i].numel() * tensors[i].element_size()
        out[i] = flat[start : start + size].view(_NUMPY_DTYPES[tensors[i].dtype]).reshape(tuple(tensors[i].shape))
        start += size
    return out


class NSTVectorEnv(NSTCore, VectorEnv):
    """``num_envs`` episodes of step-wise neural style transfer (:class:`~nst_env.style_transfer.NSTEnv`) as one
    batched env: one VGG-19 on the env's device computes all the rewards and content losses of a step in one pass,
    each env's style statistics once per episode, and a step copies from the device to the host at most once.

    ``gym.make_vec("NST-v0", num_envs=N, ...)`` builds it (``vectorization_mode="vector_entry_point"``, the default
    for ``NST-v0``); env ``i`` behaves as ``NSTEnv`` ``i`` of a ``SyncVectorEnv`` seeded the same way (same pairs,
    observations and rewards up to float rounding).

    ## Observation space
    ``Dict`` of ``N x 3 x H x W`` uint8 images (:attr:`single_observation_space`: ``NSTEnv``'s): ``moving``,
    ``style``, and with ``observe_content=True`` ``content``.

    ## Action space
    ``Box(0, 1, (N, 3, H, W), float32)``: each env's next moving image. Values outside ``[0, 1]`` are clipped and the
    images quantised to uint8 before the reward pass; NaN/inf or a wrong shape raise ``ValueError`` and change
    nothing.

    ## Reward
    ``N`` rewards ``-reward_scale * style_loss`` (float64), as ``NSTEnv``'s. ``info`` is Gymnasium's dict of arrays,
    each key with its ``_key`` mask: ``step`` (every env), ``style_loss`` and ``content_loss`` (the envs whose
    episode goes on), and with ``info_features=True`` ``vgg_content`` (``N x 512 x H/8 x W/8`` float16) and
    ``vgg_style_statistics`` (``N x 1920`` float32).

    ## Episode end
    Never ``terminated``; ``truncated`` after ``max_episode_steps`` steps. Autoreset is Gymnasium's same-step mode
    (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``): the step that truncates env ``i`` already returns
    its next episode's first observation and reset info; the last observation is ``info["final_obs"][i]`` and the
    step's info ``info["final_info"]`` (masked ``_final_obs``, ``_final_info``).

    ## Starting state
    ``reset(seed=...)``: an int seeds env ``i`` with ``seed + i``, a list gives one seed (or ``None``) per env; each
    env draws its pairs with its own generator (:attr:`np_random`), as ``NSTEnv`` does. ``options``: ``content``
    and ``style`` pin an image for every env, or per env as a list of ``N`` (``None``: drawn); ``reset_mask`` (a
    bool array of ``N``) resets only those envs.

    ## Arguments
    ``num_envs`` (>= 1), every :class:`~nst_env.style_transfer.NSTEnv` argument (``image_size``,
    ``max_episode_steps`` (default 10), ``style_loss``, ``reward_scale``, ``content_dir``, ``style_dir``,
    ``style``, ``observe_content``, ``device``, ``vgg_weights``, ``render_mode``, ``info_features``,
    ``precision``, ``crop_scales``), and:

    | argument | default | meaning |
    |---|---|---|
    | ``array_type`` | ``"numpy"`` | ``"torch"``: actions, observations, rewards, ``terminated``/``truncated`` and the |
    | | | losses and features of ``info`` are torch tensors on the env's device (uint8 quantisation there too; |
    | | | nothing is copied to the host but the actions' finiteness check, one bool; rewards are float32) |

    ``render()`` returns one ``H x 3W x 3`` frame per env (content | style | moving).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, *, array_type: str = "numpy", **kwargs: Any) -> None:
        """Check the arguments, load the images and VGG-19; every env waits for its first ``reset``.

        :param num_envs: how many envs it batches (>= 1).
        :param array_type: ``"numpy"`` or ``"torch"`` (the class docstring).
        :param kwargs: every :class:`~nst_env.style_transfer.NSTEnv` argument (:class:`~nst_env.style_transfer.NSTCore`).
        """
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        if array_type not in ARRAY_TYPES:
            raise ValueError(f"array_type must be one of {list(ARRAY_TYPES)}, got {array_type!r}.")
        super().__init__(**kwargs)
        self.num_envs = int(num_envs)
        self.array_type = array_type
        self.single_observation_space, self.single_action_space = self.observation_space, self.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n, side = self.num_envs, self.image_size
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._rng_seeds: list[int | None] = [None] * n
        # The images: on the host (drawn there; the observations with array_type="numpy"), and with
        # array_type="torch" on the device (the observations; the moving images only there).
        self._host = {key: np.zeros((n, 3, side, side), np.uint8) for key in ("content", "style", "moving")}
        self._on_device: dict[str, torch.Tensor] = {}
        if array_type == "torch":
            self._on_device = {
                key: torch.zeros((n, 3, side, side), dtype=torch.uint8, device=self.device) for key in self._host
            }
        self._steps = np.zeros(n, np.int64)
        self._ready = np.zeros(n, bool)
        self._content_target: torch.Tensor | None = None
        self._style_target: dict[str, tuple[torch.Tensor, ...]] = {}
        self._packed_style: torch.Tensor | None = None  # N x 1920 style statistics for info ("meanstd")
        self._packed_host: np.ndarray | None = None  # their host copy (array_type="numpy")

    # ------------------------------------------------------------------ seeding
    @property
    def np_random(self) -> tuple[np.random.Generator, ...]:  # type: ignore[override]
        """Each env's generator (created unseeded on first use, as ``NSTEnv``'s)."""
        return tuple(self._rng(i) for i in range(self.num_envs))

    @property
    def np_random_seed(self) -> tuple[int | None, ...]:  # type: ignore[override]
        """Each env's seed (a generator is created unseeded on first use)."""
        for env in range(self.num_envs):
            self._rng(env)  # creates a missing generator
        return tuple(self._rng_seeds)

    def _rng(self, env: int) -> np.random.Generator:
        if self._rngs[env] is None:
            self._rngs[env], self._rng_seeds[env] = seeding.np_random()
        return self._rngs[env]  # type: ignore[return-value]

    def _seed_list(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"Expected one seed (or None) per env: {self.num_envs}, got {len(seeds)}.")
        return seeds

    # ------------------------------------------------------------------ options
    def _pinned(self, options: dict[str, Any]) -> dict[str, list[ImageLike | None]]:
        pinned = {}
        for key in RESET_OPTIONS:
            value = options.get(key)
            if isinstance(value, (list, tuple)):
                if len(value) != self.num_envs:
                    raise ValueError(
                        f"options[{key!r}] as a list needs one image (or None) per env: {self.num_envs}, got "
                        f"{len(value)}."
                    )
                pinned[key] = list(value)
            else:
                pinned[key] = [value] * self.num_envs
        return pinned

    def _reset_mask(self, mask: Any) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, bool)
        mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with at least one True, got "
                f"{mask.dtype} of shape {mask.shape}."
            )
        return mask

    # ------------------------------------------------------------------ episodes
    def _draw(self, envs: np.ndarray, pinned: dict[str, list[ImageLike | None]] | None = None) -> np.ndarray:
        """``2k x 3 x H x W``: the new episodes' content photos, then their style images (each env draws its content
        first, then its style, with its own generator)."""
        pairs = [
            [
                draw_image(pool, pinned[key][i] if pinned else None, self._rng(i), self.image_size, self.crop_scales)
                for key, pool in (("content", self.content_pool), ("style", self.style_pool))
            ]
            for i in envs
        ]
        if not pairs:
            return np.zeros((0, 3, self.image_size, self.image_size), np.uint8)
        return np.stack([pair[0] for pair in pairs] + [pair[1] for pair in pairs])

    def _start(
        self, envs: np.ndarray, images: np.ndarray, uploaded: Array, feats: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Begin the episodes of ``envs``: their targets, style statistics and images.

        :param envs: the envs.
        :param images: their drawn images (:meth:`_draw`) on the host.
        :param uploaded: the same in the array type.
        :param feats: the images' activations.
        :return: the new episodes' packed style statistics (``"meanstd"``), for the host copy.
        """
        k = len(envs)
        content_target, style_target = self.reward.targets(
            {name: v[:k] for name, v in feats.items()}, {name: v[k:] for name, v in feats.items()}
        )
        index = torch.as_tensor(envs, device=self.device)
        if self._content_target is None:  # the first reset: the targets of all envs
            rows = lambda t: torch.zeros((self.num_envs, *t.shape[1:]), dtype=t.dtype, device=t.device)
            self._content_target = rows(content_target)
            self._style_target = {name: tuple(rows(t) for t in stats) for name, stats in style_target.items()}
        self._content_target[index] = content_target.to(self._content_target.dtype)
        for name, stats in style_target.items():
            for mine, new in zip(self._style_target[name], stats):
                mine[index] = new.to(mine.dtype)
        packed = None
        if self.style_loss_kind == "meanstd":
            packed = pack_mean_std(style_target)
            if self._packed_style is None:
                self._packed_style = torch.zeros((self.num_envs, packed.shape[1]), device=self.device)
            self._packed_style[index] = packed
        self._host["content"][envs], self._host["style"][envs] = images[:k], images[k:]
        self._host["moving"][envs] = images[:k]
        if self._on_device:
            self._on_device["content"][index], self._on_device["style"][index] = uploaded[:k], uploaded[k:]
            self._on_device["moving"][index] = uploaded[:k]
        self._steps[envs] = 0
        self._ready[envs] = True
        return packed

    def _upload(self, images: np.ndarray) -> Array:
        return torch.from_numpy(images).to(self.device) if self.array_type == "torch" else images

    def _transfer(self, **tensors: torch.Tensor | None) -> dict[str, Array]:
        """The tensors given (``None``: left out) in the array type: copied to the host in one transfer, or left on
        the device (torch)."""
        given = {name: t for name, t in tensors.items() if t is not None}
        values = list(given.values()) if self.array_type == "torch" else to_host(list(given.values()))
        return dict(zip(given, values))

    def _store_packed(self, envs: np.ndarray, rows: np.ndarray | None) -> None:
        if self.array_type == "torch" or rows is None:
            return
        if self._packed_host is None:
            self._packed_host = np.zeros((self.num_envs, rows.shape[1]), np.float32)
        self._packed_host[envs] = rows

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Array], dict[str, Any]]:
        """Start new episodes: every env's, or with ``options["reset_mask"]`` those it marks.

        :param seed: an int (env ``i`` gets ``seed + i``), one seed or ``None`` per env, or ``None``.
        :param options: ``content``/``style``: an image for every env, or a list with one per env (``None``:
            drawn); ``reset_mask``: a bool array of ``num_envs``.
        :return: the observations of all envs and the reset envs' infos (``step``; with ``info_features`` the
            VGG-19 features).
        """
        if options is not None:
            check_reset_options(options, (*RESET_OPTIONS, "reset_mask"))
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        seeds, pinned = self._seed_list(seed), self._pinned(options)
        envs = np.flatnonzero(mask)
        for i in envs:
            if seeds[i] is not None:
                self._rngs[i], self._rng_seeds[i] = seeding.np_random(int(seeds[i]))
        images = self._draw(envs, pinned)
        uploaded = self._upload(images)
        feats = self.reward.features(uploaded)
        packed = self._start(envs, images, uploaded, feats)
        content = feats[self.reward.content_layer][: len(envs)].to(torch.float16) if self.info_features else None
        out = self._transfer(packed=packed, content=content)
        self._store_packed(envs, out.get("packed"))
        info: dict[str, Any] = {"step": np.zeros(self.num_envs, np.int64), "_step": mask.copy()}
        if self.info_features:
            info.update(vgg_content=self._rows(out["content"], envs), _vgg_content=mask.copy())
            style = self._rows(self._packed_now()[self._index(envs)], envs)
            info.update(vgg_style_statistics=style, _vgg_style_statistics=mask.copy())
        return self._observation(), info

    def step(self, actions: Array) -> tuple[dict[str, Array], Array, Array, Array, dict[str, Any]]:
        """Every env's next image; the envs whose episode ends start the next one in this step (same-step
        autoreset).

        :param actions: ``num_envs x 3 x H x W`` RGB in ``[0, 1]`` (a torch tensor with ``array_type="torch"``).
        :return: observations, rewards, terminated, truncated and infos, batched (the class docstring).
        """
        if not self._ready.all():
            raise RuntimeError(f"Call reset() before step() (envs {np.flatnonzero(~self._ready).tolist()} never were).")
        moving = self._quantise(actions)
        n, steps = self.num_envs, self._steps + 1
        done = steps >= self.max_episode_steps if self.max_episode_steps is not None else np.zeros(n, bool)
        ends = np.flatnonzero(done)
        images = self._draw(ends)
        uploaded = self._upload(images)
        batch = torch.cat([moving, uploaded]) if self.array_type == "torch" else np.concatenate([moving, images])
        feats = self.reward.features(batch)
        assert self._content_target is not None
        losses = self.reward.losses({k: v[:n] for k, v in feats.items()}, self._style_target, self._content_target)
        final_obs = self._final_observations(ends, moving)
        old_style = self._packed_now()[self._index(ends)] if self.info_features and len(ends) else None
        self._steps = steps.copy()  # _start zeroes the new episodes' counts
        (self._on_device or self._host)["moving"] = moving
        packed = self._start(ends, images, uploaded, {k: v[n:] for k, v in feats.items()}) if len(ends) else None
        content = feats[self.reward.content_layer][: n + len(ends)] if self.info_features else None
        content = content.to(torch.float16) if content is not None else None
        out = self._transfer(losses=losses, packed=packed, content=content)  # the step's one copy to the host
        self._store_packed(ends, out.get("packed"))

        s_loss, c_loss, live = out["losses"][0], out["losses"][1], ~done
        info: dict[str, Any] = {"step": self._steps.copy(), "_step": np.ones(n, bool)}
        if live.any():
            info.update(style_loss=self._where(live, s_loss), _style_loss=live.copy())
            info.update(content_loss=self._where(live, c_loss), _content_loss=live.copy())
        final: dict[str, Any] = {}
        if len(ends):
            final = {"style_loss": self._where(done, s_loss), "_style_loss": done.copy()}
            final.update(content_loss=self._where(done, c_loss), _content_loss=done.copy())
            final.update(step=np.where(done, steps, 0), _step=done.copy())
        if self.info_features:
            content, index = out["content"], self._index(ends)  # the moving images', then the new photos'
            moving_content = _copy(content[:n])
            moving_content[index] = content[n:]
            info.update(vgg_content=moving_content, _vgg_content=np.ones(n, bool))
            info.update(vgg_style_statistics=_copy(self._packed_now()), _vgg_style_statistics=np.ones(n, bool))
            if len(ends):
                final.update(vgg_content=self._rows(content[:n][index], ends), _vgg_content=done.copy())
                final.update(vgg_style_statistics=self._rows(old_style, ends), _vgg_style_statistics=done.copy())
        if len(ends):
            info.update(final_obs=final_obs, _final_obs=done.copy(), final_info=final, _final_info=done.copy())
        if self.array_type == "torch":
            terminated = torch.zeros(n, dtype=torch.bool, device=self.device)
            return (
                self._observation(),
                -self.reward_scale * s_loss,
                terminated,
                torch.from_numpy(done).to(self.device),
                info,
            )
        return self._observation(), -self.reward_scale * s_loss.astype(np.float64), np.zeros(n, bool), done, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``H x 3W x 3`` uint8 frame per env: content | style | moving (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array" or not self._ready.any():
            return None
        moving = self._on_device["moving"].cpu().numpy() if self._on_device else self._host["moving"]
        return tuple(
            render_frame(self._host["content"][i], self._host["style"][i], moving[i]) for i in range(self.num_envs)
        )

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """An attribute, once per env (Gymnasium's ``SyncVectorEnv.get_attr``; the envs share their attributes).

        :param name: the attribute.
        """
        value = getattr(self, name)
        return tuple(value for _ in range(self.num_envs))

    def set_attr(self, name: str, values: Any) -> None:
        """Set an attribute shared by all envs (Gymnasium's ``SyncVectorEnv.set_attr``).

        :param name: the attribute.
        :param values: its value, or a list or tuple of one equal value per env.
        :raises ValueError: a list of another length or of different values (the envs share their attributes).
        """
        if isinstance(values, (list, tuple)):
            if len(values) != self.num_envs or any(bool(v != values[0]) for v in values):
                raise ValueError(
                    f"The {self.num_envs} envs of an NSTVectorEnv share their attributes: set {name!r} to one value "
                    f"(or a list of {self.num_envs} equal ones), got {values!r}."
                )
            values = values[0]
        setattr(self, name, values)

    # ------------------------------------------------------------------ helpers
    def _quantise(self, actions: Array) -> Array:
        """The validated actions as uint8 images: on the host, or on the device with ``array_type="torch"``."""
        expected = self.action_space.shape
        assert expected is not None
        if self.array_type == "torch":
            batch = actions if isinstance(actions, torch.Tensor) else torch.as_tensor(np.asarray(actions))
            batch = batch.to(self.device)
            check_action_values(batch, expected, batched=True)
            return batch.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        batch = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        check_action_values(batch, expected, batched=True)
        return quantise(batch)

    def _final_observations(self, ends: np.ndarray, moving: Array) -> np.ndarray:
        """Object array of ``num_envs``: the last observation of each env in ``ends``, ``None`` elsewhere."""
        final = np.full(self.num_envs, None, dtype=object)
        images = {**(self._on_device or self._host), "moving": moving}
        for i in ends:
            final[i] = {key: _copy(images[key][i]) for key in self.single_observation_space.spaces}  # type: ignore[attr-defined]
        return final

    def _observation(self) -> dict[str, Array]:
        images = self._on_device or self._host
        return {key: _copy(images[key]) for key in self.single_observation_space.spaces}  # type: ignore[attr-defined]

    def _packed_now(self) -> Array:
        """The current episodes' packed style statistics: the host copy, or on the device (torch)."""
        return self._packed_style if self.array_type == "torch" else self._packed_host

    def _index(self, envs: np.ndarray) -> Array:
        return torch.as_tensor(envs, device=self.device) if self.array_type == "torch" else envs

    def _rows(self, values: Array, envs: np.ndarray) -> Array:
        """``num_envs`` rows: ``values`` at ``envs``, zeros elsewhere (Gymnasium's masked info arrays)."""
        if isinstance(values, torch.Tensor):
            out = torch.zeros((self.num_envs, *values.shape[1:]), dtype=values.dtype, device=values.device)
        else:
            out = np.zeros((self.num_envs, *values.shape[1:]), dtype=values.dtype)
        out[self._index(envs)] = values
        return out

    def _where(self, mask: np.ndarray, values: Array) -> Array:
        """``values`` where ``mask``, zero elsewhere: float64 on the host, the values' dtype on the device."""
        if isinstance(values, torch.Tensor):
            return torch.where(torch.from_numpy(mask).to(values.device), values, 0.0)
        return np.where(mask, values.astype(np.float64), 0.0)


def _copy(array: Array) -> Array:
    return array.clone() if isinstance(array, torch.Tensor) else array.copy()
