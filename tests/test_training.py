"""StyleSAC's training does what it claims: hand-computed loss terms, update schedules, and short runs that
must learn (a zero learning rate or a flipped sign fails them)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import FAST, make_env

from agents import StyleSAC
from agents.inference.onnx import export_step
from agents.style_sac.objectives import soft_bellman_target, temperature_loss
from agents.style_sac.policies import style_contrastive_loss, uncertainty_weighted_sum
from agents.style_sac.style_sac import DEFAULT_TARGET_ENTROPY
from agents.training.config import build_config


@pytest.fixture(autouse=True)
def one_thread(single_torch_thread: None) -> None:
    """Small images: one torch thread is fastest (see conftest)."""


# ----------------------------------------------------------------------------- hand-computed terms
def test_soft_bellman_target_by_hand() -> None:
    rewards, next_q, log_prob = torch.tensor([-2.0, -1.0]), torch.tensor([-10.0, -4.0]), torch.tensor([-4.0, 3.0])
    target = soft_bellman_target(rewards, torch.tensor([0.0, 1.0]), next_q, log_prob, alpha=0.5, gamma=0.9)
    # bootstrapped: -2 + 0.9 * (-10 - 0.5 * -4) = -9.2; terminated: the reward alone
    torch.testing.assert_close(target, torch.tensor([-9.2, -1.0]))


def test_truncated_episodes_bootstrap() -> None:
    """NST-v0 only truncates: the replay buffer must store ``done = 0`` for every step, the 10th included."""
    model = StyleSAC("MiniStylerPolicy", make_env(), **{**FAST, "learning_starts": 25})
    model.learn(24)  # two whole episodes and a part, no update yet
    buffer = model.replay_buffer
    assert buffer.timeouts[:24].sum() == 2  # the two episode ends were time limits...
    assert buffer.dones[:24].sum() == 2 and buffer.sample(8).dones.sum() == 0  # ...which sampling turns to 0


def test_temperature_loss_by_hand_and_direction() -> None:
    log_alpha = torch.zeros(1, requires_grad=True)
    log_prob = torch.tensor([5.0, 3.5])  # entropy -4.25 on average: exactly the target
    assert float(temperature_loss(log_alpha, log_prob, -4.25).detach()) == pytest.approx(0.0)
    loss = temperature_loss(log_alpha, torch.tensor([6.0, 6.0]), -4.25)  # entropy -6, below the target
    loss.backward()
    assert float(log_alpha.grad) == pytest.approx(-1.75)  # d/dlog_alpha of -log_alpha * (6 - 4.25)
    # gradient descent raises alpha when the entropy is too low (and lowers it when too high)
    log_alpha.grad = None
    temperature_loss(log_alpha, torch.tensor([1.0]), -4.25).backward()
    assert float(log_alpha.grad) > 0


def test_uncertainty_weighting_by_hand() -> None:
    losses = torch.tensor([2.0, 8.0])
    log_p = torch.tensor([0.0, math.log(2.0)])  # p = 1 and 2
    expected = (0.5 * 2.0 + math.log(2.0)) + (0.5 / 4.0 * 8.0 + math.log(5.0))
    assert float(uncertainty_weighted_sum(losses, log_p)) == pytest.approx(expected)


def test_contrastive_loss_by_hand() -> None:
    # one level, D = 1: d(0,0) = 0, d(0,1) = 4, d(1,1) = 1, d(1,0) = 1 -> 0/4 + 1/1
    out, ref = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    assert float(style_contrastive_loss([out], [ref])) == pytest.approx(1.0, abs=1e-6)
    # levels add distances before the ratio (mean squared over D): level 2 with D = 2
    out2, ref2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    # level 2: d(0,0) = 2, d(0,1) = (1 + 1) / 2 = 1, d(1,1) = 2, d(1,0) = (1 + 9) / 2 = 5
    expected = (0 + 2) / (4 + 1) + (1 + 2) / (1 + 5)
    assert float(style_contrastive_loss([out, out2], [ref, ref2])) == pytest.approx(expected, abs=1e-6)
    assert float(style_contrastive_loss([out[:1]], [ref[:1]])) == 0.0  # needs two samples


def test_polyak_update_and_update_schedule() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), actor_update_interval=4, tau=0.25, **FAST)
    model.learn(8)  # fills the buffer; no update yet
    policy = model.policy
    target_before = [p.detach().clone() for p in policy.critic_target.parameters()]
    model.train(gradient_steps=1, batch_size=4)
    for before, online, target in zip(target_before, policy.critic.parameters(), policy.critic_target.parameters()):
        torch.testing.assert_close(target, 0.75 * before + 0.25 * online.detach())
    model.train(gradient_steps=7, batch_size=4)
    steps = lambda optimizer: int(next(iter(optimizer.state_dict()["state"].values()))["step"])
    assert steps(policy.actor.optimizer) == 2  # updates 0 and 4 of 8
    assert steps(model.ent_coef_optimizer) == 8  # the temperature every update
    assert steps(policy.critic.optimizer) == steps(policy.generative_optimizer) == 8


def test_defaults_are_on_the_latent_scale() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), **FAST)
    assert model.target_entropy == DEFAULT_TARGET_ENTROPY == -4.25
    assert float(model.log_ent_coef.exp()) == pytest.approx(1e-3)
    model.learn(10)  # two updates: the learning-rate schedule must leave the temperature's rate alone
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)
    with pytest.raises(ValueError, match="target_entropy"):
        StyleSAC("MiniStylerPolicy", make_env(), target_entropy="automatic", **FAST)


# ----------------------------------------------------------------------------- options
def test_residual_builder_starts_from_the_photo_at_the_target_entropy() -> None:
    kwargs = {
        "residual_builder": True,
        "initial_log_scale": DEFAULT_TARGET_ENTROPY - 0.5 * math.log(2 * math.pi * math.e),
    }
    model = StyleSAC("MiniStylerPolicy", make_env(), policy_kwargs=kwargs, **FAST)
    obs = model.env.reset()
    image, _ = model.predict(obs, deterministic=False)
    np.testing.assert_allclose(image[0], obs["moving"][0] / 255.0, atol=1e-6)  # a fresh agent returns the photo
    images = model.policy.images(model.policy.obs_to_tensor(obs)[0])
    assert -float(model.policy.sample(images).log_prob) == pytest.approx(DEFAULT_TARGET_ENTROPY, abs=0.05)
    with pytest.raises(ValueError, match="residual_builder=False"):
        model.load_pretrained("rlministyler")


def test_init_from_released_weights_uses_the_papers_builder() -> None:
    for config in (build_config(init="rlministyler"), build_config()):  # NST-v0's file entry fine-tunes by default
        assert config["init"] == "rlministyler"
        assert config["policy_kwargs"]["residual_builder"] is False
        assert config["policy_kwargs"]["initial_log_scale"] is None
    scratch = build_config(init="none")  # from scratch: residual builder at the target entropy
    assert scratch["init"] is None and scratch["policy_kwargs"]["residual_builder"] is True
    assert build_config(init="rlnst:blue_swirls")["init"] == "rlnst:blue_swirls"
    assert build_config(policy="RLNSTPolicy", env_kwargs={"style": "starry_night"})["init"] is None  # its own entry


def test_critics_can_read_the_style() -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), policy_kwargs={"critic_style": True}, **FAST)
    model.learn(12)
    obs = model.policy.images(model.policy.obs_to_tensor(model.env.reset())[0])
    latent = model.policy.sample(obs).latent
    q = model.policy.q_values(obs, latent)
    q_other_style = model.policy.q_values({**obs, "style": obs["style"].flip(-1)}, latent)
    assert q.shape == (2, 1) and not torch.allclose(q, q_other_style)


# ----------------------------------------------------------------------------- learning
def generative_style_loss_after(updates: int, learning_rate: float, flip: bool = False) -> tuple[float, float]:
    """The generative style loss on a fixed replayed batch before and after ``updates`` generative updates
    (control off, so only this loss drives the networks); ``flip`` ascends the loss instead."""
    model = StyleSAC(
        "MiniStylerPolicy",
        make_env(),
        control_learning=False,
        learning_rate=learning_rate,
        **{**FAST, "buffer_size": 8, "learning_starts": 8, "batch_size": 8},
    )
    model.learn(8)  # a full buffer of 8 transitions: every batch is the same 8 states
    if flip:
        loss_of = model.policy.generative_loss
        model.policy.generative_loss = lambda *a, **k: (lambda total, terms: (-total, terms))(*loss_of(*a, **k))

    def style() -> float:
        data = model.replay_buffer._get_samples(np.arange(8))  # the whole buffer, in order
        torch.manual_seed(2)  # the same latent noise
        with torch.no_grad():
            return model.policy.generative_loss(model.policy.images(data.observations), model.vgg)[1]["style_loss"]

    before = style()
    model.train(gradient_steps=updates, batch_size=8)
    return before, style()


def test_generative_updates_lower_the_style_loss() -> None:
    before, after = generative_style_loss_after(30, 2e-4)
    assert after < 0.8 * before
    still, unchanged = generative_style_loss_after(30, 0.0)
    assert unchanged == pytest.approx(still, rel=1e-4)  # a zero learning rate fails the margin above
    start, worse = generative_style_loss_after(30, 2e-4, flip=True)
    assert worse > start  # and so does a flipped sign


def test_residual_model_exports_to_onnx(tmp_path) -> None:
    model = StyleSAC("MiniStylerPolicy", make_env(), policy_kwargs={"residual_builder": True}, **FAST)
    model.learn(12)  # a few updates: the builder's output is no longer zero
    assert model.policy.builder.out_conv.weight.abs().sum() > 0
    assert export_step(model.policy, tmp_path / "step.onnx") <= 1e-4  # ONNX Runtime against policy.act
