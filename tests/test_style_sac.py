"""StyleSAC + MiniStylerPolicy: shapes, gradient flow, logging, replay, old saved models, callbacks, devices (learning,
save/load and odd sizes of every policy: tests/test_policies.py)."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, SIZE, make_env
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import SubprocVecEnv

from agents import MiniStylerPolicy, StyleSAC
from agents.networks.pretrained import PRETRAINED_DIR
from nst_env.losses import style_loss, style_statistics


@pytest.fixture(scope="module")
def trained() -> StyleSAC:
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST)
    model.learn(40)
    return model


def test_parameter_counts_match_the_paper() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model.policy.actor) + count(model.policy.builder) == pytest.approx(371_155, rel=0.01)
    assert len(model.policy.critic) == 2 and len(model.policy.critic_target) == 2


def test_acting_gives_images_and_buffers_latents(trained: StyleSAC) -> None:
    obs = trained.env.reset()
    image, _ = trained.predict(obs, deterministic=True)
    assert image.shape == (1, 3, SIZE, SIZE) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    again, _ = trained.predict(obs, deterministic=True)
    np.testing.assert_array_equal(image, again)
    assert trained.latent_space.shape == (64, SIZE // 4, SIZE // 4)
    stored = trained.replay_buffer.actions[: trained.replay_buffer.pos]
    assert stored.shape[-1] == 64 * (SIZE // 4) ** 2  # the latent, not the 3 x H x W image
    assert np.abs(stored).sum() > 0


def test_latent_gets_gradients_from_q_and_from_style_loss(trained: StyleSAC) -> None:
    policy = trained.policy
    obs = trained.env.reset()
    images = policy.images(policy.obs_to_tensor(obs)[0])
    sample = policy.sample(images)
    sample.latent.retain_grad()
    policy.q_values(images, sample.latent).min(dim=0).values.sum().backward(retain_graph=True)
    q_grad = sample.latent.grad.clone()
    assert q_grad.abs().sum() > 0
    sample.latent.grad = None
    feats = trained.vgg(policy.build(sample))
    with torch.no_grad():
        target = style_statistics(trained.vgg(images["style"]), "meanstd", list(feats))
    style_loss(feats, target, "meanstd").backward()
    assert sample.latent.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.actor.parameters())


def test_logger_records_the_losses(tmp_path) -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(30, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train/critic_loss",
        "train/actor_loss",
        "train/ent_coef",
        "train/content_loss",
        "train/style_loss",
        "train/contrastive_loss",
        "rollout/ep_rew_mean",
    ):
        assert key in header


def test_a_model_saved_before_policies_became_a_package_loads(tmp_path: Path) -> None:
    """Saved models pickle their policy class by path, ``agents.style_sac.policies.MiniStylerPolicy`` before the
    module became a package. ``tests/data`` keeps the ``data`` entry of such a zip (a 16 px model after 6 steps,
    saved by the old module; the whole zip is 11 MB, mostly weights whose layout did not change): it goes into a
    zip of today's weights of the same model, which must load and act."""
    old_data = (Path(__file__).parent / "data" / "ministyler_16px_saved_before_policies_package.data.json").read_bytes()
    pickled_class = base64.b64decode(json.loads(old_data)["policy_class"][":serialized:"])
    assert b"agents.style_sac.policies\x94" in pickled_class and b"policies.ministyler" not in pickled_class
    assert pickle.loads(pickled_class) is MiniStylerPolicy
    env = make_vec_env("nst_env:NST-v0", n_envs=1, seed=0, env_kwargs={"image_size": 16, "device": "cpu"})
    StyleSAC("MiniStylerPolicy", env, **{**FAST, "learning_starts": 4, "batch_size": 2, "buffer_size": 16}).save(
        tmp_path / "today.zip"
    )
    with zipfile.ZipFile(tmp_path / "today.zip") as today, zipfile.ZipFile(tmp_path / "old.zip", "w") as old:
        for item in today.infolist():
            old.writestr(item, old_data if item.filename == "data" else today.read(item.filename))
    loaded = StyleSAC.load(tmp_path / "old.zip", env=env, device="cpu")
    assert type(loaded.policy) is MiniStylerPolicy and loaded.num_timesteps == 6
    image, _ = loaded.predict(env.reset(), deterministic=True)
    assert image.shape == (1, 3, 16, 16)


def test_works_with_sb3_callbacks_and_subprocess_envs(tmp_path) -> None:
    env = make_env(n_envs=2, vec_env_cls=SubprocVecEnv)
    model = StyleSAC("MiniStylerPolicy", env, **FAST)
    checkpoint = CheckpointCallback(save_freq=5, save_path=str(tmp_path / "ckpt"))
    evaluation = EvalCallback(make_env(), eval_freq=10, n_eval_episodes=1, log_path=str(tmp_path / "eval"))
    model.learn(24, callback=[checkpoint, evaluation])
    env.close()
    assert len(list((tmp_path / "ckpt").glob("*.zip"))) >= 2
    assert (tmp_path / "eval" / "evaluations.npz").is_file()


def test_float16_latents_and_bfloat16_autocast() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), use_amp=True, policy_kwargs={"latent_dtype": "float16"}, **FAST)
    model.learn(11)
    assert model.replay_buffer.actions.dtype == np.float16
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_refuses_a_replay_buffer_that_cannot_fit() -> None:
    with pytest.raises(MemoryError, match="buffer_size"):
        StyleSAC("MiniStylerPolicy", make_env(), **{**FAST, "buffer_size": 10**9})


def test_pretrained_initialisation_loads_the_released_actor() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST).load_pretrained("rlministyler")
    released = torch.load(PRETRAINED_DIR / "rlministyler" / "actor.pth.tar", map_location="cpu", weights_only=True)
    ours = sum(float(p.detach().sum()) for p in model.policy.actor.parameters())
    assert ours == pytest.approx(sum(float(t.sum()) for t in released.values()), rel=1e-5)


def test_rejects_action_noise_and_wrong_observations() -> None:
    from stable_baselines3.common.noise import NormalActionNoise

    with pytest.raises(ValueError, match="action_noise"):
        StyleSAC("MiniStylerPolicy", make_env(), action_noise=NormalActionNoise(np.zeros(1), np.ones(1)), **FAST)
    assert issubclass(StyleSAC.policy_aliases["MiniStylerPolicy"], MiniStylerPolicy)
