"""StyleSAC reuses the VGG-19 features the env computed for the reward instead of computing them again."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import FAST, SIZE, make_env
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.vec_env import SubprocVecEnv

from agents import StyleSAC
from agents.style_sac.buffers import FeatureReplayBuffer
from nst_env.losses import pack_mean_std, style_statistics, unpack_mean_std

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def count_vgg_images(model: StyleSAC) -> list[int]:
    """Batch sizes of the agent's VGG-19 calls from now on."""
    calls: list[int] = []
    model.vgg.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    return calls


def recomputed(model: StyleSAC, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's own VGG-19 targets of the first ``n`` stored observations (all envs)."""
    buffer = model.replay_buffer
    images = {
        k: torch.from_numpy(buffer.observations[k][:n].reshape(-1, 3, SIZE, SIZE)).float() / 255
        for k in ("moving", "style")
    }
    layers = model.policy.vgg_layers
    with torch.no_grad():
        content = model.vgg(images["moving"], layers)[model.policy.content_layer]
        style = pack_mean_std(
            style_statistics(model.vgg(images["style"], layers), "meanstd", model.policy.style_layers)
        )
    return content, style


def test_env_reports_the_features_of_what_it_shows() -> None:
    env = gym.make("NST-v0", image_size=SIZE, device="cpu", info_features=True)
    obs, info = env.reset(seed=3)
    unwrapped = env.unwrapped
    for _ in range(2):
        moving = torch.from_numpy(obs["moving"][None]).float() / 255
        with torch.no_grad():
            expected = unwrapped.vgg(moving)["relu4_1"][0]
        assert info["vgg_content"].dtype == np.float16 and info["vgg_content"].shape == (512, SIZE // 8, SIZE // 8)
        assert torch.allclose(torch.from_numpy(info["vgg_content"]).float(), expected, rtol=2e-3, atol=2e-3)
        assert info["vgg_style_statistics"].shape == (1920,)
        obs, _, _, _, info = env.step(env.action_space.sample())
    with pytest.raises(ValueError, match="meanstd"):
        gym.make("NST-v0", image_size=SIZE, style_loss="gram", info_features=True)


def test_pack_and_unpack_style_statistics_round_trip() -> None:
    feats = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 5, 2, 2)}
    stats = style_statistics(feats, "meanstd", ["a", "b"])
    back = unpack_mean_std(pack_mean_std(stats), {"a": 3, "b": 5})
    assert all(torch.equal(x, y) for name in stats for x, y in zip(stats[name], back[name]))
    with pytest.raises(ValueError, match="N x 16"):
        unpack_mean_std(torch.zeros(2, 15), {"a": 3, "b": 5})


@pytest.mark.parametrize("vec_env_cls", [None, SubprocVecEnv], ids=["dummy", "subprocess"])
def test_buffer_keeps_each_observations_env_features(vec_env_cls) -> None:
    """Features line up with the stored observations across episode ends and envs, and the agent's VGG-19
    then sees only the built images (batch_size per update) instead of 3 x batch_size."""
    env = make_env(n_envs=2, vec_env_cls=vec_env_cls)
    model = StyleSAC("MiniStylerPolicy", env, **FAST)
    assert isinstance(model.replay_buffer, FeatureReplayBuffer)
    calls = count_vgg_images(model)
    model.learn(30)  # 15 steps per env: crosses an episode end (10 steps)
    env.close()
    assert calls and set(calls) == {FAST["batch_size"]}
    buffer = model.replay_buffer
    assert buffer.has_features[: buffer.pos].all()
    content, style = recomputed(model, buffer.pos)
    stored_content = torch.from_numpy(buffer.features["vgg_content"][: buffer.pos].reshape(content.shape)).float()
    stored_style = torch.from_numpy(buffer.features["vgg_style_statistics"][: buffer.pos].reshape(style.shape))
    assert torch.allclose(stored_content, content, rtol=2e-3, atol=2e-2)  # float16 storage
    assert torch.allclose(stored_style, style, atol=1e-5)


def test_features_are_computed_when_sharing_is_off_or_impossible() -> None:
    off = StyleSAC("MiniStylerPolicy", make_env(), share_env_features=False, **FAST)
    assert type(off.replay_buffer) is DictReplayBuffer
    calls = count_vgg_images(off)
    off.learn(10)
    assert sorted(set(calls)) == [FAST["batch_size"], 2 * FAST["batch_size"]]  # reference + output passes

    gram_env = make_env(env_kwargs={"style_loss": "gram"})  # other statistics than the policy's losses
    model = StyleSAC("MiniStylerPolicy", gram_env, **FAST)
    calls = count_vgg_images(model)
    model.learn(10)
    assert not model.replay_buffer.has_features[: model.replay_buffer.pos].any()
    assert 2 * FAST["batch_size"] in calls


def test_shared_and_computed_features_give_the_same_update() -> None:
    """One generative loss from the buffer's features equals the recomputed one up to float16 rounding."""
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST)
    model.learn(12)
    data = model.replay_buffer.sample(4)
    obs = model.policy.images(data.observations)
    reference = model._reference_features(data.features)
    assert reference is not None
    torch.manual_seed(0)
    shared, shared_terms = model.policy.generative_loss(obs, model.vgg, reference)
    torch.manual_seed(0)
    computed, computed_terms = model.policy.generative_loss(obs, model.vgg)
    assert shared.item() == pytest.approx(computed.item(), rel=1e-3)
    assert shared_terms["style_loss"] == pytest.approx(computed_terms["style_loss"], rel=1e-4)
