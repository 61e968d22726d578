"""``NSTVideo-v0``: step-wise neural style transfer of a video, and video I/O with OpenCV.

RL-NST (Feng et al., "Controlling Neural Style Transfer with Deep Reinforcement Learning", 2023) stylises a
video frame by frame, running several stylisation steps on each frame; its recurrent networks carry state
over the steps of a frame and from one frame to the next. :class:`NSTVideoEnv` lays such a walk through a
clip out as one episode. Reading and writing use OpenCV (any container/codec its FFmpeg build reads; frames
of any size).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, SupportsFloat

import cv2
import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from nst_env.images import SAMPLE_DIR, resize
from nst_env.style_transfer import NSTEnv

#: The built-in video (``data/SOURCES.md``): a tree in the wind, 320x240, 15 fps, 444 frames of which 68 are
#: distinct (the others are empty "repeat the previous frame" chunks, which OpenCV skips).
DEFAULT_VIDEO = SAMPLE_DIR / "video" / "tree.avi"
#: FourCC codes :func:`open_video_writer` uses per file ending (others: ``mp4v``).
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "MJPG"}


class VideoReadError(ValueError):
    """A video file that does not exist, cannot be opened or holds no frame."""


class VideoProperties(NamedTuple):
    """What OpenCV reports about a video file (the frame count is the container's, possibly approximate)."""

    frame_count: int
    fps: float
    width: int
    height: int


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise VideoReadError(f"No such video file: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"Cannot open {path} as a video (unknown container or codec).")
    return capture


def video_properties(path: str | os.PathLike) -> VideoProperties:
    """Frame count, frame rate and frame size of a video file.

    :param path: the video file.
    :raises VideoReadError: a missing or unreadable file.
    """
    capture = _open(path)
    try:
        return VideoProperties(
            int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            float(capture.get(cv2.CAP_PROP_FPS)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def iter_video_frames(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """The decoded frames of a video file in order, one at a time, with their position in the frame grid.

    Containers may hold empty "repeat the previous frame" entries (the built-in ``tree.avi`` does), which
    OpenCV skips; the position (the frame's timestamp times the frame rate) tells how long each decoded frame
    is shown, so that a writer can repeat it and keep the input's frame count and timing.

    :param path: the video file.
    :return: ``(index, frame)`` pairs: the frame's index at the container's frame rate (strictly increasing)
        and the frame, ``H x W x 3`` uint8 RGB.
    :raises VideoReadError: a missing or unreadable file.
    """
    capture = _open(path)
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    index = -1
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            stamp = round(capture.get(cv2.CAP_PROP_POS_MSEC) * fps / 1000.0) if fps > 0 else index + 1
            index = max(index + 1, int(stamp))
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def read_video(
    path: str | os.PathLike, size: tuple[int, int] | None = None, max_frames: int | None = None
) -> np.ndarray:
    """Decode the distinct frames of a video file into memory (see :func:`iter_video_frames`).

    :param path: the video file.
    :param size: ``(width, height)`` every frame is resized to (``None``: as stored).
    :param max_frames: keep at most this many frames from the start (``None``: all).
    :return: ``T x H x W x 3`` uint8 RGB frames.
    :raises VideoReadError: a missing or unreadable file, or one without any frame.
    """
    frames = []
    for _, frame in iter_video_frames(path):
        if max_frames is not None and len(frames) >= max_frames:
            break
        frames.append(resize(frame, *size) if size else frame)
    if not frames:
        raise VideoReadError(f"{path} holds no decodable frame.")
    return np.stack(frames)


def open_video_writer(path: str | os.PathLike, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An OpenCV writer for RGB frames of ``width x height`` (write ``cv2.cvtColor(frame, COLOR_RGB2BGR)``).

    The codec follows the file ending (:data:`FOURCC`: Motion-JPEG in ``.avi``, MPEG-4 part 2 in ``.mp4``).

    :param path: the file to write (its folder must exist).
    :param fps: frame rate.
    :param width: frame width.
    :param height: frame height.
    :raises OSError: when OpenCV cannot open the file for writing with that codec.
    """
    fourcc = cv2.VideoWriter_fourcc(*FOURCC.get(Path(path).suffix.lower(), "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path} ({width}x{height} at {fps} fps).")
    return writer


class NSTVideoEnv(NSTEnv):
    """Step-wise neural style transfer of a video clip (RL-NST's video setting, Feng et al., 2023).

    An episode walks through ``frames_per_episode`` consecutive (distinct) frames of a video, running
    ``steps_per_frame`` stylisation steps on each. Every frame's steps start from the frame itself; the
    reward is that of :class:`~nst_env.style_transfer.NSTEnv` (``-reward_scale * style_loss``), and the
    content loss in ``info`` compares with the current frame. A recurrent agent uses ``frame`` and ``step``
    to know when to carry or reset its state.

    ## Episode structure
    With ``F = frames_per_episode``, ``S = steps_per_frame`` and ``s`` the first frame of the clip:

    | env step ``t`` | ``obs["frame"]`` | ``obs["step"]`` | ``obs["content"]`` | ``obs["moving"]`` before the step |
    |---|---|---|---|---|
    | ``0`` (after ``reset``) | 0 | 0 | video frame ``s`` | video frame ``s`` |
    | ``0 < t < S`` | 0 | ``t`` | video frame ``s`` | the image of step ``t - 1`` |
    | ``S`` | 1 | 0 | video frame ``s + 1`` | video frame ``s + 1`` (a fresh start) |
    | ``f S + k`` | ``f`` | ``k`` | video frame ``s + f`` | frame ``s + f`` if ``k = 0``, else step ``t - 1``'s image |
    | ``F S`` | | | | ``truncated=True``: the episode ends (never ``terminated``) |

    The observation returned by a step that finishes a frame (``k = S - 1``) already shows the next frame;
    ``info["frame"]`` and ``info["frame_step"]`` name the frame and the 0-based step the action was applied to.

    ## Observation space
    ``Dict``: ``moving``, ``style``, ``content`` (the current frame, always observed), each
    ``Box(0, 255, (3, image_size, image_size), uint8)``; ``frame`` ``Discrete(F)``; ``step`` ``Discrete(S)``.

    ## Action space, reward, style
    As :class:`~nst_env.style_transfer.NSTEnv`: the next moving image ``Box(0, 1, (3, H, W), float32)``. The
    style is drawn per episode from ``style_dir``, or pinned with ``style`` (RL-NST: one style per model).

    ## Starting state
    ``reset`` draws the clip's first frame ``s`` uniformly from the frames that leave room for ``F`` frames
    (``self.np_random``); ``options={"start": s, "style": PATH_OR_ARRAY}`` pins either.

    ## Arguments
    | argument | default | meaning |
    |---|---|---|
    | ``video`` | built-in ``tree.avi`` | a video file, read once with OpenCV (any frame size; distinct frames) |
    | ``frames_per_episode`` | 4 | ``F``: consecutive frames per episode |
    | ``steps_per_frame`` | 10 | ``S``: stylisation steps per frame |
    | ``image_size`` | 64 | frames are resized to ``image_size x image_size`` (not cropped) |
    | ``max_video_frames`` | ``None`` | decode at most this many frames (each takes ``3 * image_size^2`` bytes) |
    | others | | as in :class:`~nst_env.style_transfer.NSTEnv`: ``style_loss``, ``reward_scale``, ``style_dir``, |
    | | | ``style``, ``device``, ``vgg_weights``, ``render_mode`` |
    """

    def __init__(
        self,
        video: str | os.PathLike | None = None,
        frames_per_episode: int = 4,
        steps_per_frame: int = 10,
        image_size: int = 64,
        max_video_frames: int | None = None,
        **kwargs: Any,
    ) -> None:
        if frames_per_episode < 1 or steps_per_frame < 1:
            raise ValueError(
                f"frames_per_episode and steps_per_frame must be >= 1, got {frames_per_episode}, {steps_per_frame}."
            )
        super().__init__(
            image_size=image_size,
            max_episode_steps=frames_per_episode * steps_per_frame,
            observe_content=True,
            **kwargs,
        )
        self.video_path = Path(video) if video is not None else DEFAULT_VIDEO
        self.frames_per_episode = frames_per_episode
        self.steps_per_frame = steps_per_frame
        frames = read_video(self.video_path, size=(self.image_size, self.image_size), max_frames=max_video_frames)
        if len(frames) < frames_per_episode:
            raise ValueError(
                f"{self.video_path} has {len(frames)} frames, fewer than frames_per_episode={frames_per_episode}."
            )
        self.frames = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # T x 3 x H x W
        self.observation_space = spaces.Dict(
            {
                **self.observation_space.spaces,
                "frame": spaces.Discrete(frames_per_episode),
                "step": spaces.Discrete(steps_per_frame),
            }
        )
        self._start = 0
        self._frame = 0

    @property
    def frame_index(self) -> int:
        """Index in the video of the frame being stylised."""
        return self._start + self._frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        gym.Env.reset(self, seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"start", "style"}
        if unknown:
            raise ValueError(f"Unknown reset options {sorted(unknown)}; expected 'start' and/or 'style'.")
        last_start = len(self.frames) - self.frames_per_episode
        start = options.pop("start", None)
        if start is None:
            start = int(self.np_random.integers(0, last_start + 1))
        if not 0 <= start <= last_start:
            raise ValueError(f"start must be in [0, {last_start}] for {self.frames_per_episode} frames, got {start}.")
        self._start, self._frame = int(start), 0
        _, info = super().reset(options={**options, "content": self.frames[self._start].transpose(1, 2, 0)})
        return self._observation(), {**info, "frame": 0, "video_frame": self.frame_index}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        frame_step = self._steps % self.steps_per_frame
        _, reward, terminated, truncated, info = super().step(action)
        info.update(frame=self._frame, frame_step=frame_step, video_frame=self.frame_index)
        if frame_step == self.steps_per_frame - 1 and not truncated:
            self._next_frame()
        return self._observation(), reward, terminated, truncated, info

    def _next_frame(self) -> None:
        """Move to the clip's next frame: it becomes the content and the moving image."""
        self._frame += 1
        self._content = self._moving = self.frames[self.frame_index].copy()
        with torch.no_grad():
            self._content_target = self.vgg(self._to_tensor([self._content]))[self._content_layer]

    def _observation(self) -> dict[str, np.ndarray]:
        obs = super()._observation()
        obs["frame"] = np.int64(self._frame)
        obs["step"] = np.int64(self._steps % self.steps_per_frame)
        return obs


__all__ = [
    "DEFAULT_VIDEO",
    "NSTVideoEnv",
    "VideoProperties",
    "VideoReadError",
    "iter_video_frames",
    "open_video_writer",
    "read_video",
    "video_properties",
]
