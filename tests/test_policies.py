"""What every actor-builder policy does in StyleSAC, for MiniStylerPolicy and RLNSTPolicy alike: learning updates
every part, save and load keep the model, and image sizes that are not multiples of 4 are padded and restored.
(The video policy's own round trip: tests/test_video.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, POLICY_ENV_KWARGS, make_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from agents import StyleSAC
from agents.inference.models import load_policy

POLICIES = sorted(POLICY_ENV_KWARGS)
STEPS = 24


@pytest.fixture(scope="module", params=POLICIES)
def trained(request: pytest.FixtureRequest, single_torch_thread: None) -> StyleSAC:
    model = StyleSAC(request.param, make_env(env_kwargs=POLICY_ENV_KWARGS[request.param]), **FAST)
    model.set_logger(configure(None, ["csv"]))
    model.learn(STEPS)
    return model


def parameters(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_learning_updates_every_part(trained: StyleSAC) -> None:
    name = type(trained.policy).__name__
    fresh = StyleSAC(name, make_env(env_kwargs=POLICY_ENV_KWARGS[name]), **FAST)
    for part in ("actor", "builder", "critic"):
        assert not torch.equal(parameters(getattr(fresh.policy, part)), parameters(getattr(trained.policy, part))), part
    for q, q_target in zip(trained.policy.critic, trained.policy.critic_target):
        assert not torch.equal(parameters(q), parameters(q_target))  # soft, not hard, updates
    assert float(trained.log_ent_coef.detach().exp()) != pytest.approx(1.0)
    assert trained._n_updates == STEPS - FAST["learning_starts"]  # one update per step after learning_starts


def test_save_load_round_trip(trained: StyleSAC, tmp_path: Path) -> None:
    trained.save(tmp_path / "model.zip")
    loaded = StyleSAC.load(tmp_path / "model.zip", env=trained.env, device="cpu")
    assert type(loaded.policy) is type(trained.policy)
    kept = ("lr_schedule", "observation_space", "action_space")
    assert {k: v for k, v in loaded.policy._get_constructor_parameters().items() if k not in kept} == {
        k: v for k, v in trained.policy._get_constructor_parameters().items() if k not in kept
    }
    obs = trained.env.reset()
    np.testing.assert_allclose(
        trained.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0], atol=1e-6
    )
    assert torch.equal(trained.log_ent_coef, loaded.log_ent_coef)
    opt_a = trained.policy.generative_optimizer.state_dict()["state"]
    opt_b = loaded.policy.generative_optimizer.state_dict()["state"]
    assert torch.equal(opt_a[0]["exp_avg"], opt_b[0]["exp_avg"])
    assert type(load_policy(tmp_path / "model.zip", device="cpu")) is type(trained.policy)
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == trained.num_timesteps + 10


@pytest.mark.parametrize("name", POLICIES)
def test_odd_image_sizes_are_padded_and_restored(name: str, single_torch_thread: None) -> None:
    env = make_vec_env("NST-v0", n_envs=1, env_kwargs={**POLICY_ENV_KWARGS[name], "image_size": 30, "device": "cpu"})
    model = StyleSAC(name, env, **FAST)
    assert model.latent_space.shape == (model.policy.latent_channels, 8, 8)
    image, _ = model.predict(env.reset())
    assert image.shape == (1, 3, 30, 30)
    model.learn(12)
