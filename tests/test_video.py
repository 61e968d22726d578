"""Video (RL-NST, Feng et al., 2023): NSTVideo-v0, the recurrent policy's state rules, the temporal loss and
metric on a video whose flow is known, and ``agents.stylize --video`` end to end."""

from __future__ import annotations

from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.logger import configure

from agents import RLNSTVideoPolicy, StyleSAC
from agents.cli import stylize
from agents.inference.models import load_policy
from agents.inference.runners import FrameStylizer
from agents.style_sac.policies import VideoHiddenStates
from agents.style_sac.temporal import (
    compound_perturbation,
    compound_temporal_loss,
    occlusion_mask,
    optical_flow,
    warp,
    warping_error,
)
from nst_env.video import DEFAULT_VIDEO, NSTVideoEnv, read_video, video_properties

SIZE = 32
FRAMES, STEPS = 3, 2


def make_env(**kwargs) -> gym.Env:
    return gym.make(
        "NSTVideo-v0",
        image_size=SIZE,
        frames_per_episode=FRAMES,
        steps_per_frame=STEPS,
        style="starry_night",
        style_loss="gram",
        device="cpu",
        **kwargs,
    )


def write_avi(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (flow estimation needs structure at several scales)."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX)


@pytest.fixture(scope="module")
def env(single_torch_thread: None) -> gym.Env:
    return make_env()


# ------------------------------------------------------------------------------------------------- env
def test_env_passes_the_gymnasium_checker(env: gym.Env) -> None:
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space["frame"] == gym.spaces.Discrete(FRAMES)
    assert env.observation_space["step"] == gym.spaces.Discrete(STEPS)


def test_episode_walks_through_consecutive_frames(env: gym.Env) -> None:
    frames = env.unwrapped.frames
    obs, info = env.reset(seed=0, options={"start": 4})
    assert info["video_frame"] == 4 and (obs["frame"], obs["step"]) == (0, 0)
    seen, action = [], np.full((3, SIZE, SIZE), 0.25, np.float32)
    truncated, t = False, 0
    while not truncated:
        assert (obs["frame"], obs["step"]) == divmod(t, STEPS)
        np.testing.assert_array_equal(obs["content"], frames[4 + obs["frame"]])  # frame order
        if obs["step"] == 0:  # each frame's steps start from the frame itself
            np.testing.assert_array_equal(obs["moving"], frames[4 + obs["frame"]])
        else:
            assert np.all(obs["moving"] == 64)  # the previous step's image (0.25 * 255, rounded)
        obs, reward, terminated, truncated, info = env.step(action)
        seen.append((info["frame"], info["frame_step"], info["video_frame"]))
        assert not terminated and reward < 0
        t += 1
    assert t == FRAMES * STEPS
    assert seen == [(f, k, 4 + f) for f in range(FRAMES) for k in range(STEPS)]


def test_random_starts_are_seeded_and_bounded(env: gym.Env) -> None:
    starts = [env.reset(seed=s)[1]["video_frame"] for s in range(8)]
    assert starts == [env.reset(seed=s)[1]["video_frame"] for s in range(8)]
    assert max(starts) <= len(env.unwrapped.frames) - FRAMES
    with pytest.raises(ValueError, match="start"):
        env.reset(options={"start": len(env.unwrapped.frames)})


def test_any_frame_size_and_the_default_video(tmp_path: Path, env: gym.Env) -> None:
    odd = write_avi(tmp_path / "odd.avi", [texture(37, 45, seed) for seed in range(4)])
    small = NSTVideoEnv(video=odd, frames_per_episode=2, steps_per_frame=1, image_size=SIZE, device="cpu")
    obs, _ = small.reset(seed=0)
    assert obs["content"].shape == (3, SIZE, SIZE) and len(small.frames) == 4
    assert DEFAULT_VIDEO.is_file() and len(read_video(DEFAULT_VIDEO, size=(8, 8))) == 68  # 68 distinct frames
    assert video_properties(DEFAULT_VIDEO)[:1] == (444,)  # the container's count (repeat entries included)


# ------------------------------------------------------------------------------------ hidden-state rules
def test_hidden_state_carrying_rules() -> None:
    states = VideoHiddenStates()
    states.match((2, 3, 8, 8))
    step0, frame0 = torch.tensor([0, 0]), torch.tensor([0, 0])
    assert states.step_input(step0) is None and states.frame_input(frame0, step0) is None
    h_step, h_frame = torch.ones(2, 4, 2, 2), torch.full((2, 4, 2, 2), 3.0)
    states.update(step0, h_step, h_frame)
    # Next step of the same frame: the step-wise state is carried, the frame-wise one is not (frame 0).
    assert torch.equal(states.step_input(torch.tensor([1, 1])), h_step)
    assert states.frame_input(frame0, torch.tensor([1, 1])) is None
    # Step 0 of the next frame: step-wise state reset; frame-wise state of step 0 carried over.
    assert states.step_input(step0) is None
    assert torch.equal(states.frame_input(torch.tensor([1, 1]), step0), h_frame)
    # Mixed batch: env 0 starts a new frame, env 1 continues; env 1 has no stored state for step 1.
    mixed = states.step_input(torch.tensor([0, 1]))
    assert mixed[0].abs().sum() == 0 and torch.equal(mixed[1], h_step[1])
    frame_in = states.frame_input(torch.tensor([1, 1]), torch.tensor([0, 1]))
    assert torch.equal(frame_in[0], h_frame[0]) and frame_in[1].abs().sum() == 0
    # A new image size forgets everything; without frame carrying, the frame-wise state is always zero.
    states.match((2, 3, 16, 16))
    assert states.step_input(torch.tensor([1, 1])) is None and not states.frame_hidden
    assert VideoHiddenStates(carry_frames=False).frame_input(torch.tensor([1]), torch.tensor([0])) is None


def test_policy_carries_states_as_the_rules_say(env: gym.Env) -> None:
    policy = load_policy("rlnst:blue_swirls", device="cpu")  # image model for reference
    video = RLNSTVideoPolicy(env.observation_space, env.action_space, lr_schedule=lambda _: 1e-4).eval()
    video.load_released("rlnst:blue_swirls")
    frames = [torch.rand(1, 3, SIZE, SIZE) for _ in range(2)]
    # A fresh GRU's state is 0: the video model starts as the image model.
    with torch.no_grad():
        image = policy.build(policy.sample({"moving": frames[0]}, deterministic=True))
        torch.testing.assert_close(video.build(video.sample({"moving": frames[0]}, deterministic=True)), image)
        for gru in (video.actor.step_gru, video.builder.frame_gru):  # make the states matter
            torch.nn.init.normal_(gru.candidate.weight, std=0.05)
        outputs = {}
        for f, frame in enumerate(frames):
            moving = frame
            for k in range(2):
                obs = {"moving": moving, "frame": torch.tensor([f]), "step": torch.tensor([k])}
                outputs[f, k] = moving = video.act(obs, deterministic=True)[1]
        # The same computation with explicit states: step-wise over k, frame-wise from (0, k) to (1, k).
        frame_states, expected = {}, {}
        for f, frame in enumerate(frames):
            moving, step_state = frame, None
            for k in range(2):
                sample = video.step_sample({"moving": moving}, step_state, deterministic=True)
                image, frame_states[k] = video.step_build(sample, frame_states.get(k) if f else None)
                step_state, expected[f, k] = sample.context.step_hidden, image.clamp(0, 1)
                moving = expected[f, k]
    for key in outputs:
        torch.testing.assert_close(outputs[key], expected[key])
    with torch.no_grad():  # and the frame-wise state does change frame 1's output
        alone = video.step_build(video.step_sample({"moving": frames[1]}, None, deterministic=True))[0]
    assert (alone.clamp(0, 1) - outputs[1, 0]).abs().max() > 1e-4


# ------------------------------------------------------------------------- temporal loss and metric
def translated_video(n: int = 4, shift: int = 2) -> list[np.ndarray]:
    """A texture translated right by ``shift`` px per frame (wrapping around): its flow is known."""
    base = texture(48, 64)
    return [np.roll(base, shift * t, axis=1) for t in range(n)]


def test_temporal_loss_is_zero_for_the_true_flow() -> None:
    frames = translated_video()
    x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255.0
    nxt = torch.from_numpy(frames[1]).permute(2, 0, 1)[None].float() / 255.0
    flow = torch.zeros(1, 2, 48, 64)
    flow[:, 0] = -2.0  # frame 1 at p is frame 0 at p - 2 px
    warped, valid = warp(x, flow)
    assert ((warped - nxt).abs() * valid).max() < 1e-5 and valid[..., :2].sum() == 0  # left edge leaves the image
    # A warp-equivariant "stylisation" (colour inversion) is perfectly consistent; a position-dependent one is not.
    invert = lambda img: 1.0 - img
    assert compound_temporal_loss(invert(nxt), invert(x), flow) < 1e-5
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64)
    assert compound_temporal_loss(nxt * ramp, x * ramp, flow) > 1e-2
    perturbed, random_flow = compound_perturbation(x, generator=torch.Generator().manual_seed(0))
    assert random_flow.abs().max() <= 10.0 + 1e-3
    assert compound_temporal_loss(invert(perturbed), invert(x), random_flow) < 3e-3  # only the noise is left


def test_warping_error_of_a_known_translation() -> None:
    frames = translated_video()
    backward, forward = optical_flow(frames[1], frames[0]), optical_flow(frames[0], frames[1])
    np.testing.assert_allclose(backward[8:-8, 8:-8].mean(axis=(0, 1)), [-2.0, 0.0], atol=0.1)
    assert occlusion_mask(backward, forward)[:, :2].all()  # pixels entering at the left edge
    assert warping_error(frames, frames) < 1e-4  # the input is consistent with its own flow
    assert warping_error(frames, frames, method="farneback") < 1e-4
    flicker = [np.clip(f.astype(int) + 20 * (t % 2), 0, 255).astype(np.uint8) for t, f in enumerate(frames)]
    assert warping_error(frames, flicker) > 100 * warping_error(frames, frames)


# ------------------------------------------------------------------------------------ training and CLI
@pytest.fixture(scope="module")
def video_model(env: gym.Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = StyleSAC("RLNSTVideoPolicy", env, learning_starts=6, batch_size=2, buffer_size=32, device="cpu", seed=0)
    model.set_logger(configure(None, ["csv"]))
    model.load_pretrained("rlnst:blue_swirls")
    model.learn(10)
    assert model.logger.name_to_value["train/temporal_loss"] >= 0.0
    assert model.vgg.layers == RLNSTVideoPolicy.vgg_layers
    path = tmp_path_factory.mktemp("video_model") / "video.zip"
    model.save(path)
    return path


def test_video_policy_learns_and_round_trips(video_model: Path, env: gym.Env) -> None:
    loaded = StyleSAC.load(video_model, env=env, device="cpu")
    assert isinstance(loaded.policy, RLNSTVideoPolicy) and loaded.policy.temporal_weight == 100.0
    assert (
        sum(p.numel() for p in loaded.policy.actor.parameters())
        + sum(p.numel() for p in loaded.policy.builder.parameters())
        == 622_905
    )
    obs, _ = env.reset(seed=0)
    image, _ = loaded.predict(obs, deterministic=True)
    assert image.shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match="NSTVideo-v0"):
        StyleSAC("RLNSTVideoPolicy", gym.make("NST-v0", image_size=SIZE, observe_content=True, device="cpu"))


@pytest.mark.parametrize("model", ["rlnst:blue_swirls", "video", "rlministyler"])
def test_stylize_video_end_to_end(tmp_path: Path, video_model: Path, model: str) -> None:
    source = write_avi(tmp_path / "clip.avi", translated_video(n=5, shift=1), fps=12.0)
    args = [
        "--model",
        str(video_model) if model == "video" else model,
        "--video",
        str(source),
        "--steps",
        "1",
        "3",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    assert stylize.main(args + (["--style", "starry_night"] if model == "rlministyler" else [])) == 0
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name.split("_step")[1] for p in outputs] == ["01.avi", "03.avi"]
    for path in outputs:
        assert video_properties(path) == video_properties(source)  # frame count, fps and size
        assert len(read_video(path)) == 5


def test_frame_stylizer_keeps_the_requested_steps() -> None:
    policy = load_policy("rlnst:blue_swirls", device="cpu")
    outputs = FrameStylizer(policy, None, (2, 1))(texture(20, 24))
    assert sorted(outputs) == [1, 2] and outputs[1].shape == (20, 24, 3)
    with pytest.raises(ValueError, match="style image"):
        FrameStylizer(load_policy("rlministyler", device="cpu"), None, (1,))
