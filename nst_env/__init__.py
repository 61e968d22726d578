"""Gymnasium environment for step-wise neural style transfer (``NST-v0``) and its VGG-19 perception.

Importing this package registers ``NST-v0``::

    import gymnasium as gym
    import nst_env

    env = gym.make("NST-v0", image_size=64)
    envs = gym.make_vec("NST-v0", num_envs=8, image_size=64)  # one batched env: NSTVectorEnv
"""

from gymnasium.envs.registration import register

from nst_env.images import (
    SAMPLE_CONTENT_DIR,
    SAMPLE_STYLE_DIR,
    ImageReadError,
    load_image,
)
from nst_env.losses import (
    channel_mean_std,
    content_loss,
    gram_matrix,
    style_loss,
    style_statistics,
    total_variation,
)
from nst_env.style_transfer import NSTEnv
from nst_env.utils import resolve_device
from nst_env.vector import NSTVectorEnv
from nst_env.vgg import VGG19Features, load_vgg19_weights

# One env: the episode length is Gymnasium's TimeLimit (so `gym.make(..., max_episode_steps=N)` works), the env's
# own limit switched off (make_nst_env) to avoid two competing limits. gym.make_vec builds the batched NSTVectorEnv,
# which counts the steps itself (make_vec passes it max_episode_steps, 10 unless given).
register(
    id="NST-v0",
    entry_point="nst_env.style_transfer:make_nst_env",
    vector_entry_point="nst_env.vector:NSTVectorEnv",
    max_episode_steps=10,
)
# NSTVideo-v0 truncates by itself after frames_per_episode * steps_per_frame steps (nst_env/video.py).
register(id="NSTVideo-v0", entry_point="nst_env.video:NSTVideoEnv")

__all__ = [
    "SAMPLE_CONTENT_DIR",
    "SAMPLE_STYLE_DIR",
    "ImageReadError",
    "NSTEnv",
    "NSTVectorEnv",
    "VGG19Features",
    "channel_mean_std",
    "content_loss",
    "gram_matrix",
    "load_image",
    "load_vgg19_weights",
    "resolve_device",
    "style_loss",
    "style_statistics",
    "total_variation",
]
