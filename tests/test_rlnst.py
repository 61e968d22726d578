"""RL-NST single-style agent (Feng et al., 2023): RLNSTPolicy in StyleSAC, the released models, the CLIs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import FAST, POLICY_ENV_KWARGS, SIZE
from conftest import make_env as make_rlnst_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv

from agents import RLNSTPolicy, StyleSAC
from agents.cli import stylize, train_sac
from agents.errors import ConfigError
from agents.inference.models import RELEASED, load_policy
from agents.networks import denormalize_imagenet, normalize_imagenet
from agents.networks.pretrained import PRETRAINED_DIR, RLNST_BUILDER_KEY_MAP, rename_keys
from agents.training.config import build_config
from nst_env.losses import content_style_layers

DATA = Path(__file__).parent / "data"


def make_env() -> VecEnv:
    return make_rlnst_env(env_kwargs=POLICY_ENV_KWARGS["RLNSTPolicy"])


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def trained(single_torch_thread: None) -> StyleSAC:
    model = StyleSAC("RLNSTPolicy", make_env(), **FAST)
    model.set_logger(configure(None, ["csv"]))
    model.learn(24)
    return model


def test_sizes_and_spaces() -> None:
    model = StyleSAC("RLNSTPolicy", make_env(), **FAST)
    policy = model.policy
    assert n_params(policy.actor) + n_params(policy.builder) == pytest.approx(178_425, rel=0.01)
    assert n_params(policy.critic[0]) == 93_344 and len(policy.critic_target) == 2
    assert model.latent_space.shape == (1, SIZE // 4, SIZE // 4)
    assert model.vgg.layers == content_style_layers("gram") == policy.vgg_layers  # relu1_2 ... relu4_3
    assert StyleSAC.policy_aliases["RLNSTPolicy"] is RLNSTPolicy and not RLNSTPolicy.needs_style_image


def test_requires_the_content_photo_in_the_observation() -> None:
    env = gym.make("NST-v0", image_size=SIZE, style="starry_night", style_loss="gram", device="cpu")
    with pytest.raises(ValueError, match="observe_content=True"):
        StyleSAC("RLNSTPolicy", env, **FAST)


def test_released_policy_reproduces_the_reference_through_its_normalisation() -> None:
    ref = np.load(DATA / "rlnst_reference_io.npz")
    policy = load_policy("rlnst:blue_swirls", device="cpu")
    assert isinstance(policy, RLNSTPolicy) and "rlnst:blue_swirls" in RELEASED
    policy.set_training_mode(False)
    content = denormalize_imagenet(torch.from_numpy(ref["content_normalized"]))  # the env's [0, 1] images
    with torch.no_grad():
        sample = policy.sample({"moving": content}, deterministic=True)
        output = normalize_imagenet(policy.build(sample))
    expected = torch.from_numpy(ref["output_step1"])
    assert ((output - expected).abs().max() / expected.abs().max()).item() < 1e-4
    mean = torch.from_numpy(ref["latent_mean"])
    assert ((sample.latent - mean).abs().max() / mean.abs().max()).item() < 1e-4


def test_acting(trained: StyleSAC) -> None:
    obs, _ = trained.env.envs[0].reset(seed=1)
    image, _ = trained.predict(obs, deterministic=True)
    assert image.shape == (3, SIZE, SIZE) and image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_array_equal(image, trained.predict(obs, deterministic=True)[0])
    stored = trained.replay_buffer.actions[: trained.replay_buffer.pos]
    assert stored.shape[-1] == (SIZE // 4) ** 2 and np.abs(stored).sum() > 0  # the 1-channel latent


def test_logs_the_rlnst_losses(trained: StyleSAC) -> None:
    logged = trained.logger.name_to_value
    assert {"train/style_loss", "train/content_loss", "train/tv_loss", "train/critic_loss"} <= set(logged)


def test_generative_loss_reaches_actor_and_builder(trained: StyleSAC) -> None:
    policy = trained.policy
    obs, _ = trained.env.envs[0].reset(seed=2)
    images = policy.images(policy.obs_to_tensor(obs)[0])
    policy.actor.zero_grad(), policy.builder.zero_grad()
    total, terms = policy.generative_loss(images, trained.vgg)
    total.backward()
    assert set(terms) == {"content_loss", "style_loss", "tv_loss"} and all(np.isfinite(list(terms.values())))
    for net in (policy.actor, policy.builder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_init_from_released_weights() -> None:
    model = StyleSAC("RLNSTPolicy", make_env(), **FAST).load_pretrained("rlnst:fire")
    released = torch.load(PRETRAINED_DIR / "rlnst" / "fire" / "decoder.ckpt", map_location="cpu", weights_only=True)
    assert n_params(model.policy.builder) == sum(t.numel() for t in released.values())
    ours = model.policy.builder.state_dict()
    for name, tensor in rename_keys(released, RLNST_BUILDER_KEY_MAP).items():  # each tensor, by name
        torch.testing.assert_close(ours[name], tensor.float(), rtol=0, atol=0, msg=name)


def test_train_sac_config_pins_the_style_and_the_env_kwargs() -> None:
    config = build_config(policy="RLNSTPolicy", env_kwargs={"style": "the_scream"})
    assert config["policy"] == "RLNSTPolicy"
    pinned = {"style": "the_scream", "observe_content": True, "style_loss": "gram"}
    assert config["env_kwargs"] | pinned == config["env_kwargs"]
    config = build_config(init="rlnst:blue_swirls")
    assert config["policy"] == "RLNSTPolicy"
    assert config["env_kwargs"]["style"] == str(PRETRAINED_DIR / "rlnst" / "blue_swirls" / "style.jpg")
    with pytest.raises(ConfigError, match="--style"):
        build_config(init="rlnst:fire")  # no style image was published
    with pytest.raises(ConfigError, match="--style"):
        build_config(policy="RLNSTPolicy")


def test_train_sac_from_a_released_single_style_model(tmp_path: Path) -> None:
    code = train_sac.main(
        [
            "--init",
            "rlnst:blue_swirls",
            "-n",
            "10",
            "-f",
            str(tmp_path),
            "--save-freq",
            "0",
            "--eval-freq",
            "0",
            "--image-size",
            "32",
            "--no-progress",
            "-v",
            "0",
            "--hyperparams",
            "learning_starts:8",
            "batch_size:2",
            "buffer_size:20",
        ]
    )
    assert code == 0
    run = tmp_path / "style_sac_NST-v0_1"
    assert isinstance(StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).policy, RLNSTPolicy)
    assert (run / "sequence.png").is_file()


def test_stylize_single_style_model_needs_no_style(tmp_path: Path, capsys) -> None:
    code = stylize.main(
        [
            "--model",
            "rlnst:maxresdefault",
            "--content",
            "chelsea",
            "--steps",
            "2",
            "--max-side",
            "48",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert (tmp_path / "chelsea__maxresdefault_step02.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        stylize.main(["--content", "chelsea", "--out", str(tmp_path), "--device", "cpu"])
    assert exit_info.value.code == 2 and "--style is required" in capsys.readouterr().err
