"""Shared settings and fixtures: the agents' tests' image size, fast StyleSAC settings and env factory
(``from conftest import FAST, SIZE, make_env``), PPO's learning check, odd image files, fake VGG-19 weight files,
one torch thread for the env/VGG tests, and a session folder for the exported ONNX models (not ``~/.cache``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from agents.inference.onnx import CACHE_ENV
from nst_env.vgg import _ADAIN_CONV_INDEX, _CONVS, _TORCHVISION_CONV_INDEX

#: Channels of VGG-19's 16 convolutions, in network order.
VGG_CHANNELS = tuple(64 * 2 ** min(block - 1, 3) for block, _ in _CONVS)
#: Image side of the agents' tests.
SIZE = 32
#: StyleSAC settings that learn within a few steps.
FAST = dict(learning_starts=8, batch_size=4, buffer_size=64, verbose=0, device="cpu", seed=0)
#: NST-v0 keyword arguments each policy needs: RL-NST trains one style and compares with the content photo.
POLICY_ENV_KWARGS: dict[str, dict[str, Any]] = {
    "MiniStylerPolicy": {},
    "RLNSTPolicy": {"style": "starry_night", "observe_content": True, "style_loss": "gram"},
}


def make_env(n_envs: int = 1, env_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> VecEnv:
    """NST-v0 at :data:`SIZE` px on the CPU, vectorised and seeded.

    :param n_envs: parallel envs.
    :param env_kwargs: NST-v0 arguments on top of the size and device.
    :param kwargs: further arguments of SB3's ``make_vec_env`` (e.g. ``vec_env_cls``).
    """
    # "module:EnvId" makes gymnasium import nst_env (and so register NST-v0) inside subprocess workers too
    env_kwargs = {"image_size": SIZE, "device": "cpu", **(env_kwargs or {})}
    return make_vec_env("nst_env:NST-v0", n_envs=n_envs, seed=0, env_kwargs=env_kwargs, **kwargs)


def assert_ppo_learns(env: Any, timesteps: int = 256) -> Any:
    """SB3's ``PPO("MultiInputPolicy")`` learns ``timesteps`` env steps on ``env``: every parameter changes and the
    loss is finite.

    :param env: a Gymnasium env or an SB3 ``VecEnv`` (images of at least 36 px: SB3's NatureCNN needs them).
    :param timesteps: env steps (transitions) to learn for.
    :return: the model.
    """
    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(timesteps)
    assert model.num_timesteps == timesteps
    assert all(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    assert np.isfinite(model.logger.name_to_value["train/loss"])
    return model


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a test module, restored afterwards.

    The env and VGG tests use 32-64 px images, where splitting a convolution over threads costs more than it
    saves, and on a busy 2-core machine OpenMP's spin-waiting threads made them up to 10x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_flushed_denormals() -> Iterator[None]:
    """Undo the process-wide flush of denormal floats that the training commands and benchmarks set, after each
    test (Hypothesis refuses to draw floats while denormals are flushed)."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ONNX cache of ``agents.stylize`` (:mod:`agents.inference.backends`) in a folder of the test session, shared by
    its tests (subprocesses inherit it), instead of the user's ``~/.cache``."""
    folder = tmp_path_factory.mktemp("onnx_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small image files of every awkward kind, each in ``odd/`` (flat); see the keys for what they are.

    Every file is readable except ``broken`` (not an image at all).
    """
    folder = tmp_path_factory.mktemp("odd")
    rgb = _rgb(40, 50)
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, **kwargs: object) -> None:
        files[name.split(".")[0]] = folder / name
        image.save(folder / name, **kwargs)

    save("rgb.jpg", Image.fromarray(rgb), quality=95)
    save("gray.png", Image.fromarray(rgb[..., 0]))  # mode L
    save("gray_alpha.png", Image.fromarray(rgb).convert("LA"))
    rgba = np.dstack([rgb, np.full((40, 50), 255, np.uint8)])
    rgba[:, :25, 3] = 0  # left half fully transparent: composited on white
    save("rgba.png", Image.fromarray(rgba))
    save("palette.png", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    save(
        "palette_transparent.gif",
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        transparency=0,
    )
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"))
    save("bmp.bmp", Image.fromarray(rgb))
    # 16-bit grayscale: a horizontal ramp over the full 0..65535 range; the large one exceeds every decode side
    # the tests use, which once broke Pillow's thumbnail() ("image has wrong mode").
    ramp = np.linspace(0, 65535, 50).round().astype(np.uint16)
    save("gray16.png", Image.fromarray(np.tile(ramp, (40, 1))))
    big_ramp = np.linspace(0, 65535, 700).round().astype(np.uint16)
    save("gray16_large.png", Image.fromarray(np.tile(big_ramp, (600, 1))))
    save("tiny.png", Image.fromarray(rgb[:5, :3]))  # far smaller than any image_size
    save("one_pixel.png", Image.fromarray(rgb[:1, :1]))
    files["broken"] = folder / "broken.jpg"
    files["broken"].write_bytes(b"this is not a JPEG")
    return files


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder tree of 3 readable images (one in a sub-sub-folder), a broken one and a non-image file."""
    root = tmp_path_factory.mktemp("folder")
    (root / "a" / "b").mkdir(parents=True)
    Image.fromarray(_rgb(48, 64, seed=1)).save(root / "one.png")
    Image.fromarray(_rgb(64, 48, seed=2)).convert("L").save(root / "a" / "two.jpg")
    Image.fromarray(_rgb(30, 30, seed=3)).save(root / "a" / "b" / "three.PNG")
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    (root / "notes.txt").write_text("not an image")
    return root


def _fake_vgg_convs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (He-initialised) VGG-19 conv weights and small positive biases, in network order."""
    generator = torch.Generator().manual_seed(seed)
    convs, c_in = [], 3
    for c_out in VGG_CHANNELS:
        weight = torch.randn(c_out, c_in, 3, 3, generator=generator) * (2.0 / (9 * c_in)) ** 0.5
        convs.append((weight, torch.full((c_out,), 0.01)))
        c_in = c_out
    return convs


@pytest.fixture(scope="session")
def fake_hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch hub dir holding ``checkpoints/vgg19-dcbb9e9d.pth``: torchvision's ``vgg19`` state-dict layout
    (``features.N.weight``; the classifier left out) with random weights of the right shapes."""
    hub = tmp_path_factory.mktemp("hub")
    state = {}
    for index, (weight, bias) in zip(_TORCHVISION_CONV_INDEX, _fake_vgg_convs(seed=0)):
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
    (hub / "checkpoints").mkdir()
    torch.save(state, hub / "checkpoints" / "vgg19-dcbb9e9d.pth")
    return hub


@pytest.fixture(scope="session")
def adain_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AdaIN ``vgg_normalised.pth``-style state dict with random weights: a 1x1 input conv (index 0; here
    RGB in [0, 1] -> BGR x255 minus a mean) and the 3x3 convs at AdaIN's indices."""
    path = tmp_path_factory.mktemp("adain") / "vgg_normalised.pth"
    state = {
        "0.weight": torch.eye(3).flip(0).view(3, 3, 1, 1) * 255.0,
        "0.bias": torch.tensor([-104.0, -117.0, -124.0]),
    }
    for index, (weight, bias) in zip(_ADAIN_CONV_INDEX, _fake_vgg_convs(seed=1)):
        state[f"{index}.weight"], state[f"{index}.bias"] = weight, bias
    torch.save(state, path)
    return path
