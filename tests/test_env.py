"""``NST-v0``: spaces, checkers, seeding, pinning, rewards, episode length, rendering, vector envs, SB3."""

from __future__ import annotations

import doctest
import multiprocessing
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import assert_ppo_learns
from gymnasium.utils.env_checker import check_env

import nst_env
from nst_env import NSTEnv, load_image
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR, resize
from nst_env.reward import CPU_CHUNK_PIXELS, PerceptualReward

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SIZE = 32


@pytest.fixture(scope="module")
def env() -> NSTEnv:
    return NSTEnv(image_size=SIZE, device="cpu")


def test_the_docstring_example_runs() -> None:
    runner = doctest.DocTestRunner()
    for example in doctest.DocTestFinder(recurse=False).find(NSTEnv, "NSTEnv", globs={}):
        runner.run(example)
    assert runner.tries > 0 and runner.failures == 0


def as_action(image: np.ndarray) -> np.ndarray:
    """A ``3 x H x W`` uint8 observation as the action that reproduces it."""
    return image.astype(np.float32) / 255.0


def chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def pinned(path_or_array: object) -> np.ndarray:
    """What a pinned image should look like: resized to SIZE x SIZE without cropping, channel-first."""
    return chw(resize(load_image(path_or_array, max_side=4 * SIZE), SIZE, SIZE))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- API
def test_registered_spaces_and_metadata() -> None:
    assert "NST-v0" in gym.registry
    env = gym.make("NST-v0", image_size=SIZE, device="cpu")
    assert env.spec is not None and env.spec.max_episode_steps == 10
    image = gym.spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8)
    assert env.observation_space == gym.spaces.Dict({"moving": image, "style": image})
    assert env.action_space == gym.spaces.Box(0.0, 1.0, (3, SIZE, SIZE), np.float32)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info == {"step": 0}
    env.close()


def test_gymnasium_check_env_is_clean() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # unwrapped, as check_env asks; made with gym.make so it has a spec (check_env then also builds the
        # env with render_mode="rgb_array" and checks render())
        check_env(gym.make("NST-v0", image_size=SIZE, device="cpu").unwrapped)
        check_env(gym.make("NST-v0", image_size=SIZE, device="cpu", observe_content=True, style_loss="gram").unwrapped)
        wrapped = gym.make("NST-v0", image_size=SIZE, device="cpu")  # the passive checker of gym.make
        wrapped.reset(seed=0)
        wrapped.step(wrapped.action_space.sample())
    assert [str(w.message) for w in caught] == []


def test_sb3_check_env_warns_only_about_inherent_things() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(NSTEnv(image_size=36, device="cpu"))
    messages = {str(w.message) for w in caught}
    # the action is an image in [0, 1], not a symmetric normalised Box: inherent
    assert len(messages) == 1 and "symmetric and normalized Box action space" in messages.pop()


def test_step_before_reset_and_bad_arguments() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        NSTEnv(image_size=SIZE, device="cpu").step(np.zeros((3, SIZE, SIZE), np.float32))
    for kwargs, match in [
        ({"image_size": 8}, ">= 16"),
        ({"image_size": 32.0}, "integer"),
        ({"style_loss": "l2"}, "gram"),
        ({"max_episode_steps": 0}, ">= 1"),
        ({"render_mode": "human"}, "rgb_array"),
        ({"style": "no_such_painting"}, "no_such_painting"),
        ({"crop_scales": ()}, "crop_scales"),
        ({"crop_scales": (0.5,)}, r"\[1, 4\]"),
        ({"crop_scales": (8,)}, r"\[1, 4\]"),
        ({"crop_scales": "2"}, "crop_scales"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            NSTEnv(**{"image_size": SIZE, "device": "cpu", **kwargs})


def test_bad_actions_say_what_was_expected(env: NSTEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3, 32, 32\).*got shape \(32, 32, 3\)"):
        env.step(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*got shape \(1, 3, 32, 32\)"):
        env.step(np.zeros((1, 3, SIZE, SIZE), np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        action = np.full((3, SIZE, SIZE), 0.5, np.float32)
        action[1, 2, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite.*\\[0, 1\\]"):
            env.step(action)
    assert env._steps == 0  # rejected actions are not steps


def test_out_of_range_actions_are_clipped(env: NSTEnv) -> None:
    env.reset(seed=0)
    action = np.full((3, SIZE, SIZE), 0.5, np.float32)
    action[0], action[2] = 7.0, -3.0
    obs, reward, *_ = env.step(action)
    assert (obs["moving"][0] == 255).all() and (obs["moving"][1] == 128).all() and (obs["moving"][2] == 0).all()
    clipped, *_ = env.step(np.clip(action, 0, 1))
    np.testing.assert_array_equal(obs["moving"], clipped["moving"])
    assert reward == env.step(np.clip(action, 0, 1))[1]


def test_unknown_reset_options_are_rejected(env: NSTEnv) -> None:
    with pytest.raises(ValueError, match="'content' and/or 'style'"):
        env.reset(options={"contnet": "chelsea"})


# ----------------------------------------------------------------------------------------------- seeding, pinning
def test_reset_seed_is_reproducible(env: NSTEnv) -> None:
    first, _ = env.reset(seed=123)
    again, _ = NSTEnv(image_size=SIZE, device="cpu").reset(seed=123)  # a fresh env: same draw
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    follow_a = env.reset()[0]  # unseeded resets continue the seeded stream
    env.reset(seed=123)
    follow_b = env.reset()[0]
    np.testing.assert_array_equal(follow_a["style"], follow_b["style"])
    others = [env.reset(seed=seed)[0] for seed in (1, 2, 3)]
    for key in ("moving", "style"):
        draws = [first[key]] + [o[key] for o in others]
        assert all(not np.array_equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1 :]), key


def test_draws_are_random_crops_of_the_samples(env: NSTEnv) -> None:
    """reset() without options: a random SIZE crop of a sample resized to 2*SIZE (the papers' transform)."""
    obs, _ = env.reset(seed=7)
    candidates = [
        chw(resize(load_image(p, max_side=4 * SIZE), 2 * SIZE, 2 * SIZE))
        for p in sorted(SAMPLE_STYLE_DIR.glob("*.jpg"))
    ]
    windows = [
        c[:, t : t + SIZE, left : left + SIZE] for c in candidates for t in range(SIZE + 1) for left in range(SIZE + 1)
    ]
    assert any(np.array_equal(obs["style"], w) for w in windows)
    styles = {env.reset(seed=s)[0]["style"].tobytes() for s in range(12)}
    assert len(styles) == 12


def test_crop_scales_draw_the_scale_per_image() -> None:
    """crop_scales=(1, 4): each drawn image is the whole sample resized to SIZE, or a SIZE crop of it at 4*SIZE."""
    env = NSTEnv(image_size=SIZE, device="cpu", crop_scales=(1, 4))
    samples = [load_image(p, max_side=4 * SIZE) for p in sorted(SAMPLE_STYLE_DIR.glob("*.jpg"))]
    whole = [chw(resize(image, SIZE, SIZE)) for image in samples]
    big = [chw(resize(image, 4 * SIZE, 4 * SIZE)) for image in samples]
    crops = [np.lib.stride_tricks.sliding_window_view(b, (3, SIZE, SIZE))[0] for b in big]  # 3S+1 x 3S+1 windows
    kinds = []
    for seed in range(8):
        style = env.reset(seed=seed)[0]["style"]
        is_whole = any(np.array_equal(style, w) for w in whole)
        assert is_whole or any((c == style).all(axis=(2, 3, 4)).any() for c in crops), seed
        kinds.append(is_whole)
    assert any(kinds) and not all(kinds)  # both scales were drawn
    again = NSTEnv(image_size=SIZE, device="cpu", crop_scales=(1, 4)).reset(seed=5)[0]
    np.testing.assert_array_equal(again["style"], env.reset(seed=5)[0]["style"])
    default, scale2 = NSTEnv(image_size=SIZE, device="cpu"), NSTEnv(image_size=SIZE, device="cpu", crop_scales=[2])
    np.testing.assert_array_equal(default.reset(seed=3)[0]["style"], scale2.reset(seed=3)[0]["style"])


def test_pin_content_and_style_by_path_array_and_name(env: NSTEnv) -> None:
    chelsea = SAMPLE_CONTENT_DIR / "chelsea.jpg"
    starry = SAMPLE_STYLE_DIR / "starry_night.jpg"
    by_path, _ = env.reset(seed=0, options={"content": chelsea, "style": str(starry)})
    np.testing.assert_array_equal(by_path["moving"], pinned(chelsea))
    np.testing.assert_array_equal(by_path["style"], pinned(starry))
    by_name, _ = env.reset(seed=1, options={"content": "chelsea", "style": "starry_night"})
    for key in by_path:
        np.testing.assert_array_equal(by_name[key], by_path[key])
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    by_array, _ = env.reset(seed=2, options={"style": array})
    np.testing.assert_array_equal(by_array["style"], pinned(array))
    assert not np.array_equal(by_array["moving"], by_path["moving"])  # the content is drawn again
    only_style, _ = env.reset(seed=3, options={"style": "starry_night"})
    np.testing.assert_array_equal(only_style["style"], pinned(starry))


def test_style_argument_pins_every_episode() -> None:
    colour = np.full((10, 10, 3), (200, 30, 90), np.uint8)
    env = NSTEnv(image_size=SIZE, style=colour, device="cpu")
    for seed in range(3):
        assert (env.reset(seed=seed)[0]["style"] == np.array([200, 30, 90], np.uint8)[:, None, None]).all()
    named = NSTEnv(image_size=SIZE, style="starry_night", device="cpu")
    assert named.style_pool.items == [str(SAMPLE_STYLE_DIR / "starry_night.jpg")]


# ----------------------------------------------------------------------------------------------- rewards
@pytest.mark.parametrize("kind", ["meanstd", "gram"])
def test_reward_and_losses(kind: str) -> None:
    env = NSTEnv(image_size=SIZE, style_loss=kind, reward_scale=2.5, device="cpu")
    obs, _ = env.reset(seed=0, options={"content": "chelsea", "style": "starry_night"})
    # identity step: the moving image stays the content photo
    same, reward, terminated, truncated, info = env.step(as_action(obs["moving"]))
    np.testing.assert_array_equal(same["moving"], obs["moving"])
    assert info["step"] == 1 and not terminated and not truncated
    assert info["content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert reward == -2.5 * info["style_loss"] and info["style_loss"] > 0
    # painting the style image itself: style loss ~0
    _, reward, _, _, info = env.step(as_action(obs["style"]))
    itself = info["style_loss"]
    assert itself == pytest.approx(0.0, abs=1e-9) and reward == -2.5 * itself
    assert info["content_loss"] > 0.01
    # noise is far from the style (gram losses are ~1e-3 here, mean/std ones ~1)
    noise = np.random.default_rng(0).random((3, SIZE, SIZE), dtype=np.float32)
    _, reward, _, _, info = env.step(noise)
    assert info["style_loss"] > max(1e-4, 1e6 * itself) and reward == -2.5 * info["style_loss"] < 0
    assert info["step"] == 3


def test_style_loss_ranks_images_sensibly(env: NSTEnv) -> None:
    """Same photo: a closer-to-the-style image scores better than noise and than a flat grey."""
    obs, _ = env.reset(options={"content": "chelsea", "style": "starry_night"})
    losses = {}
    blend = 0.3 * as_action(obs["moving"]) + 0.7 * as_action(obs["style"])
    for name, action in {
        "style": as_action(obs["style"]),
        "blend": blend,
        "photo": as_action(obs["moving"]),
        "grey": np.full((3, SIZE, SIZE), 0.5, np.float32),
    }.items():
        losses[name] = env.step(action)[4]["style_loss"]
    assert losses["style"] < losses["blend"] < losses["photo"] < losses["grey"]


def test_info_is_what_the_step_computed(env: NSTEnv) -> None:
    """The reported losses are those of the quantised image the observation shows."""
    from nst_env.losses import content_loss, style_loss, style_statistics

    obs, _ = env.reset(seed=5)
    action = np.random.default_rng(1).random((3, SIZE, SIZE), dtype=np.float32)
    new, reward, _, _, info = env.step(action)
    np.testing.assert_array_equal(new["moving"], np.rint(action * 255).astype(np.uint8))
    to_tensor = lambda image: torch.from_numpy(image[None].astype(np.float32) / 255.0)
    with torch.no_grad():
        layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
        target = style_statistics(env.vgg(to_tensor(obs["style"])), "meanstd", layers)
        feats = env.vgg(to_tensor(new["moving"]))
        content = env.vgg(to_tensor(obs["moving"]))["relu4_1"]
        assert info["style_loss"] == pytest.approx(float(style_loss(feats, target, "meanstd")), rel=1e-4)
        assert info["content_loss"] == pytest.approx(float(content_loss(feats["relu4_1"], content)), rel=1e-4)


def test_vgg_runs_once_per_step_and_style_statistics_once_per_episode(
    env: NSTEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    hook = env.vgg.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    stats_calls = []
    original = nst_env.reward.style_statistics
    monkeypatch.setattr(nst_env.reward, "style_statistics", lambda *a: stats_calls.append(1) or original(*a))
    try:
        env.reset(seed=0)
        for _ in range(3):
            env.step(env.action_space.sample())
    finally:
        hook.remove()
    assert batches == [2, 1, 1, 1]  # content + style together at reset, then the moving image each step
    assert len(stats_calls) == 1


# ----------------------------------------------------------------------------------------------- episodes
def run_episode(env: gym.Env, seed: int = 0) -> list[tuple[bool, bool, int]]:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    flags = []
    while True:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        flags.append((terminated, truncated, info["step"]))
        if terminated or truncated:
            return flags


def test_episode_length_through_gym_make() -> None:
    default = run_episode(gym.make("NST-v0", image_size=SIZE, device="cpu"))
    assert default == [(False, False, i) for i in range(1, 10)] + [(False, True, 10)]
    three = run_episode(gym.make("NST-v0", image_size=SIZE, device="cpu", max_episode_steps=3))
    assert three == [(False, False, 1), (False, False, 2), (False, True, 3)]


def test_episode_length_of_the_bare_env() -> None:
    env = NSTEnv(image_size=SIZE, max_episode_steps=4, device="cpu")
    assert run_episode(env)[-1] == (False, True, 4) and len(run_episode(env, seed=1)) == 4
    env = NSTEnv(image_size=SIZE, max_episode_steps=None, device="cpu")
    env.reset(seed=0)
    assert not any(env.step(env.action_space.sample())[3] for _ in range(12))


# ----------------------------------------------------------------------------------------------- observation, render
def test_observe_content_adds_the_content_photo() -> None:
    env = NSTEnv(image_size=SIZE, observe_content=True, device="cpu")
    assert set(env.observation_space.spaces) == {"moving", "style", "content"}
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["content"], obs["moving"])
    obs, *_ = env.step(np.zeros((3, SIZE, SIZE), np.float32))
    assert env.observation_space.contains(obs) and obs["moving"].max() == 0 and obs["content"].max() > 0
    obs["content"][:] = 0  # observations are copies: the env keeps its own
    assert env.step(np.zeros((3, SIZE, SIZE), np.float32))[0]["content"].max() > 0


def test_render_rgb_array() -> None:
    env = gym.make("NST-v0", image_size=SIZE, render_mode="rgb_array", device="cpu")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (SIZE, 3 * SIZE, 3) and frame.dtype == np.uint8
    obs, *_ = env.step(np.ones((3, SIZE, SIZE), np.float32))
    frame = env.render()
    np.testing.assert_array_equal(
        frame[:, SIZE : 2 * SIZE], obs["style"].transpose(1, 2, 0)
    )  # content | style | moving
    assert (frame[:, 2 * SIZE :] == 255).all() and not (frame[:, :SIZE] == 255).all()
    assert NSTEnv(image_size=SIZE, device="cpu").render() is None


# ----------------------------------------------------------------------------------------------- vector envs, SB3
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs(mode: str) -> None:
    kwargs, threads = {}, torch.get_num_threads()
    if mode == "async" and "fork" in multiprocessing.get_all_start_methods():
        # Forking after torch ran a multi-threaded op here is what hung the workers (GNU OpenMP is not
        # fork-safe); "fork" is the default on Linux before Python 3.14, so it is what users get.
        kwargs = {"vector_kwargs": {"context": "fork"}}
        torch.set_num_threads(2)
        NSTEnv(image_size=64, device="cpu").reset(seed=0)
    envs = gym.make_vec("NST-v0", num_envs=2, vectorization_mode=mode, image_size=SIZE, device="cpu", **kwargs)
    torch.set_num_threads(threads)
    try:
        obs, info = envs.reset(seed=[10, 11])
        assert obs["moving"].shape == obs["style"].shape == (2, 3, SIZE, SIZE) and list(info["step"]) == [0, 0]
        single, _ = NSTEnv(image_size=SIZE, device="cpu").reset(seed=11)
        np.testing.assert_array_equal(obs["style"][1], single["style"])  # each sub-env seeded as given
        for step in range(1, 11):
            obs, reward, terminated, truncated, info = envs.step(np.full((2, 3, SIZE, SIZE), 0.5, np.float32))
            np.testing.assert_array_almost_equal(reward, -np.asarray(info["style_loss"]), decimal=5)
            assert list(info["step"]) == [step, step] and not terminated.any()
            assert (obs["moving"] == 128).all()
        assert truncated.all()
    finally:
        envs.close()


def test_ppo_learns_a_few_hundred_steps() -> None:
    # image_size=36: SB3's default NatureCNN features extractor needs images of at least 36 x 36
    env = gym.make("NST-v0", image_size=36, device="cpu")
    model = assert_ppo_learns(env)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (3, 36, 36) and env.action_space.contains(action)  # predict clips to the Box
    env.step(action)


def test_cpu_reward_pass_runs_in_chunks_with_the_same_features() -> None:
    """On the CPU, PerceptualReward.features runs VGG-19 on chunks of CPU_CHUNK_PIXELS (4 images at 64 px): the
    same activations as one pass over the whole batch."""
    reward = PerceptualReward("meanstd", torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 64, 64), dtype=np.uint8)
    batches: list[int] = []
    hook = reward.vgg.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    chunked = reward.features(images)
    hook.remove()
    assert batches == [CPU_CHUNK_PIXELS // (64 * 64), 6 - CPU_CHUNK_PIXELS // (64 * 64)]
    with torch.no_grad():
        whole = reward.vgg(torch.from_numpy(images).float() / 255.0)
    assert chunked.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-4, atol=1e-5)
