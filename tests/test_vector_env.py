"""``NST-v0`` batched: ``NSTVectorEnv`` against a ``SyncVectorEnv`` of ``NSTEnv``s, its seeding, options, bad input,
one VGG-19 pass and one host copy per step, the torch path, Gymnasium's vector wrappers, and training on it through
the SB3 adapter (PPO, StyleSAC, ``agents.training.experiment.make_env``)."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import FAST, assert_ppo_learns
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import nst_env
from agents import StyleSAC
from agents.errors import ConfigError
from agents.style_sac.buffers import FeatureReplayBuffer
from agents.training.experiment import make_env
from agents.training.vec_env import BatchedVecEnv, infos_to_list, make_batched_vec_env
from nst_env import NSTEnv, NSTVectorEnv
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR

pytestmark = pytest.mark.usefixtures("single_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
SIZE, N = 16, 3
KWARGS: dict[str, Any] = {"image_size": SIZE, "device": "cpu"}


def actions(seed: int, n: int = N, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def same_step_sync(n: int = N, **kwargs: Any) -> SyncVectorEnv:
    """``n`` NSTEnvs in Gymnasium's SyncVectorEnv with same-step autoreset, the batched env's reference."""
    return SyncVectorEnv(
        [lambda: NSTEnv(**{**KWARGS, **kwargs}) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP
    )


def assert_infos_close(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    """The same keys, masks and dtypes; values equal up to float rounding (final observations exactly)."""
    assert sorted(mine) == sorted(theirs)
    for key, expected in theirs.items():
        if key == "final_info":
            assert_infos_close(mine[key], expected)
        elif key == "final_obs":
            for a, b in zip(mine[key], expected):
                assert (a is None) == (b is None)
                for image in () if a is None else b:
                    np.testing.assert_array_equal(a[image], b[image])
        else:
            assert mine[key].dtype == expected.dtype and mine[key].shape == expected.shape, key
            np.testing.assert_allclose(mine[key].astype(float), expected.astype(float), rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------------------------- contract
def test_make_vec_builds_the_batched_env_with_nst_envs_spaces() -> None:
    envs = gym.make_vec("NST-v0", num_envs=N, **KWARGS)
    single = NSTEnv(**KWARGS)
    assert isinstance(envs, NSTVectorEnv) and envs.num_envs == N and envs.max_episode_steps == 10
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    assert envs.observation_space == gym.vector.utils.batch_space(single.observation_space, N)
    assert envs.action_space.shape == (N, 3, SIZE, SIZE)
    assert gym.make_vec("NST-v0", num_envs=2, max_episode_steps=None, **KWARGS).max_episode_steps is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["vector_entry_point", "sync", "async"])
def test_make_vec_in_every_mode_gives_the_same_first_episode(mode: str) -> None:
    vector_kwargs = {}
    if mode == "async" and "fork" in multiprocessing.get_all_start_methods():
        vector_kwargs = {"context": "fork"}  # workers without re-importing torch (nst_env.utils: one thread each)
    envs = gym.make_vec(
        "NST-v0", num_envs=N, vectorization_mode=mode, vector_kwargs=vector_kwargs, max_episode_steps=2, **KWARGS
    )
    reference = NSTVectorEnv(N, max_episode_steps=2, **KWARGS)
    try:
        obs, info = envs.reset(seed=4)
        expected, _ = reference.reset(seed=4)
        assert list(info["step"]) == [0] * N
        for t in range(2):
            obs, reward, terminated, truncated, info = envs.step(actions(t))
            _, expected_reward, *_ = reference.step(actions(t))
            np.testing.assert_allclose(reward, expected_reward, rtol=1e-4)
            np.testing.assert_allclose(reward, -info.get("final_info", info)["style_loss"], rtol=1e-6)
            assert not terminated.any() and list(truncated) == [t == 1] * N
    finally:
        envs.close()


def test_same_pairs_observations_rewards_and_infos_as_sync_vector_env() -> None:
    """Two episodes (and a step into the third): the batched env is N NSTEnvs in one."""
    kwargs = {"max_episode_steps": 3, "observe_content": True, "info_features": True}
    batched, sync = NSTVectorEnv(N, **KWARGS, **kwargs), same_step_sync(**kwargs)
    obs, info = batched.reset(seed=11)
    expected, expected_info = sync.reset(seed=11)
    for step in range(7):
        for key in expected:
            np.testing.assert_array_equal(obs[key], expected[key])
        assert_infos_close(info, expected_info)
        obs, reward, terminated, truncated, info = batched.step(actions(step))
        expected, expected_reward, expected_terminated, expected_truncated, expected_info = sync.step(actions(step))
        assert reward.dtype == np.float64
        np.testing.assert_allclose(reward, expected_reward, rtol=1e-4)
        np.testing.assert_array_equal(terminated, expected_terminated)
        np.testing.assert_array_equal(truncated, expected_truncated)
    assert "final_obs" not in info and list(info["step"]) == [1] * N


def test_seeds_per_env_options_and_reset_mask() -> None:
    envs = NSTVectorEnv(N, **KWARGS)
    single = NSTEnv(**KWARGS)
    obs, _ = envs.reset(seed=[None, 7, None])
    np.testing.assert_array_equal(obs["style"][1], single.reset(seed=7)[0]["style"])
    assert envs.np_random_seed[1] == 7 and len(envs.np_random) == N
    chelsea = SAMPLE_CONTENT_DIR / "chelsea.jpg"
    obs, _ = envs.reset(seed=0, options={"content": [None, chelsea, None], "style": "starry_night"})
    pinned, _ = single.reset(options={"content": chelsea, "style": SAMPLE_STYLE_DIR / "starry_night.jpg"})
    np.testing.assert_array_equal(obs["moving"][1], pinned["moving"])
    assert all(np.array_equal(obs["style"][i], pinned["style"]) for i in range(N))
    np.testing.assert_array_equal(obs["moving"][0], single.reset(seed=0)[0]["moving"])
    envs.step(actions(0))
    again, info = envs.reset(seed=3, options={"reset_mask": np.array([False, True, False])})
    assert list(info["_step"]) == [False, True, False]
    np.testing.assert_array_equal(again["style"][1], single.reset(seed=4)[0]["style"])  # env 1: seed + 1
    np.testing.assert_array_equal(again["style"][0], obs["style"][0])  # the others go on
    assert list(envs._steps) == [1, 0, 1]


def test_bad_input_raises_one_clear_error_and_changes_nothing() -> None:
    for num_envs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
            NSTVectorEnv(num_envs, **KWARGS)
    for kwargs, match in [({"array_type": "jax"}, "array_type"), ({"precision": "fp8"}, "precision")]:
        with pytest.raises(ValueError, match=match):
            NSTVectorEnv(N, **KWARGS, **kwargs)
    envs = NSTVectorEnv(N, **KWARGS)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(actions(0))
    obs, _ = envs.reset(seed=0)
    nan = actions(0)
    nan[2, 1, 3, 4] = np.nan
    for bad, match in [
        (actions(0, n=N - 1), r"shape \(3, 3, 16, 16\).*got shape \(2, 3, 16, 16\)"),
        (actions(0)[0], r"got shape \(3, 16, 16\)"),
        (nan, r"NaN or infinite.*\[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            envs.step(bad)
    for options, match in [
        ({"reset_mask": np.array([True, False])}, "reset_mask"),
        ({"reset_mask": np.zeros(N, bool)}, "at least one True"),
        ({"content": ["chelsea"]}, "one image .* per env"),
        ({"contnet": "chelsea"}, "'content' and/or 'style'"),
    ]:
        with pytest.raises(ValueError, match=match):
            envs.reset(options=options)
    with pytest.raises(TypeError, match="must be a dict"):
        envs.reset(options=["content"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one seed"):
        envs.reset(seed=[1, 2])
    assert list(envs._steps) == [0] * N  # nothing happened: the env goes on
    step, *_ = envs.step(np.full((N, 3, SIZE, SIZE), 0.5, np.float32))
    assert (step["moving"] == 128).all() and list(envs._steps) == [1] * N
    np.testing.assert_array_equal(step["style"], obs["style"])


def test_one_vgg_pass_and_one_host_copy_per_step_style_statistics_once_per_episode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envs = NSTVectorEnv(N, max_episode_steps=2, info_features=True, **KWARGS)
    batches: list[int] = []
    envs.vgg.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    statistics, copies = [], []
    original_stats, original_copy = nst_env.reward.style_statistics, nst_env.vector.to_host
    monkeypatch.setattr(
        nst_env.reward,
        "style_statistics",
        lambda feats, *a: statistics.append(len(next(iter(feats.values())))) or original_stats(feats, *a),
    )
    monkeypatch.setattr(
        nst_env.vector, "to_host", lambda tensors: copies.append(len(tensors)) or original_copy(tensors)
    )
    envs.reset(seed=0)
    for t in range(4):
        envs.step(actions(t))
    # content + style at reset; the moving images each step, with the next episodes' pairs when one ends
    assert batches == [2 * N, N, 3 * N, N, 3 * N]
    assert statistics == [N, N, N]  # per env once per episode (the style losses use their own statistics)
    assert copies == [2, 2, 3, 2, 3]  # one transfer each: losses, features (+ new episodes' style statistics)


def test_torch_arrays_stay_on_the_device_and_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"max_episode_steps": 2, "info_features": True, "observe_content": True}
    on_device, on_host = NSTVectorEnv(N, array_type="torch", **KWARGS, **kwargs), NSTVectorEnv(N, **KWARGS, **kwargs)
    copies: list[int] = []
    monkeypatch.setattr(nst_env.vector, "to_host", lambda tensors: copies.append(len(tensors)))
    obs, info = on_device.reset(seed=2)
    monkeypatch.undo()
    expected, _ = on_host.reset(seed=2)
    assert all(isinstance(obs[k], torch.Tensor) and obs[k].dtype == torch.uint8 for k in obs)
    assert isinstance(info["vgg_content"], torch.Tensor)
    for t in range(3):
        step_actions = actions(t) * 1.4 - 0.2  # some values to clip
        monkeypatch.setattr(nst_env.vector, "to_host", lambda tensors: copies.append(len(tensors)))
        obs, reward, terminated, truncated, info = on_device.step(torch.from_numpy(step_actions))
        monkeypatch.undo()
        expected, expected_reward, _, expected_truncated, expected_info = on_host.step(step_actions)
        for key in expected:
            np.testing.assert_array_equal(obs[key].numpy(), expected[key])  # quantised alike on the device
        assert reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == torch.bool
        np.testing.assert_allclose(reward.numpy(), expected_reward, rtol=1e-5)
        np.testing.assert_array_equal(truncated.numpy(), expected_truncated)
        assert isinstance(info.get("final_info", info)["style_loss"], torch.Tensor)
    assert copies == []  # nothing went through the host copy
    np.testing.assert_allclose(info["vgg_content"].float().numpy(), expected_info["vgg_content"], atol=1e-3)
    nan = torch.full((N, 3, SIZE, SIZE), 0.5)
    nan[0, 0, 0, 0] = torch.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        on_device.step(nan)


def test_render_gives_one_frame_per_env() -> None:
    envs = NSTVectorEnv(N, render_mode="rgb_array", **KWARGS)
    assert envs.render() is None  # before reset
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(np.ones((N, 3, SIZE, SIZE), np.float32))
    frames = envs.render()
    assert len(frames) == N and all(f.shape == (SIZE, 3 * SIZE, 3) and f.dtype == np.uint8 for f in frames)
    np.testing.assert_array_equal(frames[1][:, SIZE : 2 * SIZE], obs["style"][1].transpose(1, 2, 0))
    assert all((f[:, 2 * SIZE :] == 255).all() for f in frames)
    assert NSTVectorEnv(1, **KWARGS).render() is None


def test_bfloat16_reward_pass_is_close_to_float32() -> None:
    rewards = {}
    for precision in ("float32", "bfloat16"):
        envs = NSTVectorEnv(N, precision=precision, **KWARGS)
        envs.reset(seed=1)
        rewards[precision] = envs.step(actions(1))[1]
        single = NSTEnv(precision=precision, **KWARGS)
        single.reset(seed=1)
        assert single.step(actions(1)[0])[1] == pytest.approx(rewards[precision][0], rel=3e-2)
    np.testing.assert_allclose(rewards["bfloat16"], rewards["float32"], rtol=5e-2)


# ----------------------------------------------------------------------------------------------- Gymnasium wrappers
def test_gymnasium_vector_wrappers() -> None:
    envs = gym.wrappers.vector.RecordEpisodeStatistics(NSTVectorEnv(N, max_episode_steps=2, **KWARGS))
    envs.reset(seed=0)
    returns = np.zeros(N)
    for t in range(2):
        _, reward, _, _, info = envs.step(actions(t))
        returns += reward
    assert list(info["_episode"]) == [True] * N
    np.testing.assert_allclose(info["episode"]["r"], returns, rtol=1e-5)
    assert list(info["episode"]["l"]) == [2] * N

    normalized = gym.wrappers.vector.NormalizeReward(NSTVectorEnv(N, max_episode_steps=2, **KWARGS))
    raw = NSTVectorEnv(N, max_episode_steps=2, **KWARGS)
    normalized.reset(seed=0)
    raw.reset(seed=0)
    for t in range(3):
        reward, raw_reward = normalized.step(actions(t))[1], raw.step(actions(t))[1]
        assert reward.shape == (N,) and np.isfinite(reward).all() and (np.sign(reward) == np.sign(raw_reward)).all()
    assert not np.allclose(reward, raw_reward)  # scaled by the running return's spread


# ----------------------------------------------------------------------------------------------- SB3
def test_sb3_adapter_speaks_the_vec_env_api() -> None:
    adapter = BatchedVecEnv(NSTVectorEnv(2, max_episode_steps=2, **KWARGS))
    adapter.seed(5)
    obs = adapter.reset()
    reference = DummyVecEnv([lambda: gym.make("NST-v0", **KWARGS) for _ in range(2)])
    reference.seed(5)
    np.testing.assert_array_equal(obs["style"], reference.reset()["style"])  # seeded as SB3's envs
    assert adapter.reset_infos == [{"step": 0}, {"step": 0}]
    _, reward, done, infos = adapter.step(actions(0, n=2))
    assert reward.dtype == np.float32 and not done.any() and infos[0]["step"] == 1
    assert infos[0]["TimeLimit.truncated"] is False and "terminal_observation" not in infos[0]
    last, reward, done, infos = adapter.step(actions(1, n=2))
    assert done.all() and all(info["step"] == 2 and info["TimeLimit.truncated"] for info in infos)
    np.testing.assert_allclose(reward, [-info["style_loss"] for info in infos], rtol=1e-6)
    np.testing.assert_array_equal(infos[1]["terminal_observation"]["moving"], np.rint(actions(1, n=2)[1] * 255))
    assert adapter.reset_infos == [{"step": 0}, {"step": 0}]
    np.testing.assert_array_equal(last["moving"], adapter.venv._host["content"])  # the next episodes' photos
    assert adapter.get_attr("style_loss_kind") == ["meanstd", "meanstd"] and adapter.has_attr("vgg_source")
    adapter.env_method("set_wrapper_attr", "info_features", True)
    assert adapter.env_method("get_wrapper_attr", "info_features", indices=[1]) == [True]
    with pytest.raises(ValueError, match="share"):
        adapter.set_attr("reward_scale", 2.0, indices=[0])
    assert adapter.env_is_wrapped(gym.Wrapper) == [False, False]
    adapter.set_options({"style": "starry_night"})
    obs = adapter.reset()
    np.testing.assert_array_equal(obs["style"][0], obs["style"][1])
    assert infos_to_list({"a": np.arange(2), "_a": np.array([False, True])}, 2) == [{}, {"a": 1}]
    with pytest.raises(ValueError, match="same-step"):
        BatchedVecEnv(gym.make_vec("NST-v0", num_envs=2, vectorization_mode="sync", **KWARGS))
    with pytest.raises(ValueError, match="numpy"):
        BatchedVecEnv(NSTVectorEnv(2, array_type="torch", **KWARGS))


@pytest.mark.timeout(120)
def test_ppo_learns_a_few_hundred_steps_on_the_batched_env() -> None:
    # 36 px: SB3's default NatureCNN features extractor needs images of at least 36 x 36
    env = make_batched_vec_env("nst_env:NST-v0", 2, seed=0, env_kwargs={"image_size": 36, "device": "cpu"})
    model = assert_ppo_learns(env)  # 2 rollouts of 64 steps of 2 envs
    assert model.n_envs == 2 and model.rollout_buffer.buffer_size == 64


@pytest.mark.timeout(120)
def test_style_sac_learns_on_two_batched_envs_with_their_features(tmp_path: Path) -> None:
    env = make_batched_vec_env(
        "nst_env:NST-v0", 2, seed=0, env_kwargs={"image_size": 32, "device": "cpu"}, monitor_file=tmp_path / "0"
    )
    model = StyleSAC("MiniStylerPolicy", env, **FAST)
    model.learn(24)  # 12 steps of 2 envs: past an episode end (10 steps)
    env.close()
    assert model.num_timesteps == 24 and model.replay_buffer.pos == 12
    assert isinstance(model.replay_buffer, FeatureReplayBuffer) and model.replay_buffer.has_features[:12].all()
    rows = (tmp_path / "0.monitor.csv").read_text().splitlines()
    assert len(rows) == 2 + 2 and all(row.split(",")[1] == "10" for row in rows[2:])  # header lines, 2 episodes


def test_experiment_make_env_batches_n_envs_by_default(tmp_path: Path) -> None:
    config = {"env_id": "NST-v0", "env_kwargs": {"image_size": SIZE}, "n_envs": 2, "seed": 0}
    short = {**config, "env_kwargs": {"image_size": SIZE, "max_episode_steps": 1}}
    monitor = tmp_path / "monitor" / "0.monitor.csv"
    for resume, rows in ((False, 2 + 2), (True, 2 + 4)):  # header lines, then a row per episode of each env
        env = make_env(short, tmp_path, "cpu", resume=resume)
        assert isinstance(env, VecMonitor) and isinstance(env.venv, BatchedVecEnv) and env.num_envs == 2
        env.reset()
        env.step(actions(0, n=2))
        env.close()
        assert len(monitor.read_text().splitlines()) == rows  # a resumed run appends
    dummy = make_env(config, None, "cpu", resume=False, vec_env="dummy")
    assert isinstance(dummy, DummyVecEnv) and dummy.num_envs == 2
    assert isinstance(make_env({**config, "n_envs": 1}, None, "cpu", resume=False), DummyVecEnv)
    with pytest.raises(ConfigError, match="batched, subproc, dummy"):
        make_env(config, None, "cpu", resume=False, vec_env="ray")


def test_train_sac_takes_the_vec_env_setting() -> None:
    from agents.cli.train_sac import build_parser, settings_of

    assert settings_of(build_parser().parse_args([]))["vec_env"] == "batched"
    assert settings_of(build_parser().parse_args(["--vec-env", "subproc"]))["vec_env"] == "subproc"


# ----------------------------------------------------------------------------------------------- benchmark
@pytest.mark.timeout(120)
def test_throughput_benchmark_writes_its_results(tmp_path: Path) -> None:
    """A tiny run of benchmarks/env_throughput.py: every output file, the table's columns, sane numbers."""
    spec = importlib.util.spec_from_file_location("env_throughput", ROOT / "benchmarks" / "env_throughput.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    vec_envs = ["batched", "batched-bf16", "sync", "subproc"]
    argv = ["--device", "cpu", "--sizes", "16", "--n-envs", "1", "2", "--vec-envs", *vec_envs]
    timing = ["--steps", "4", "--warmup", "1", "--rounds", "2", "--episode-steps", "2"]
    rows = bench.main([*argv, *timing, "--out", str(tmp_path)])
    assert [(r["n_envs"], r["vec_env"]) for r in rows] == [(n, kind) for n in (1, 2) for kind in vec_envs]
    assert all(r["steps_per_s"] > 0 and r["floor_per_s"] > 0 and r["timed_steps"] == 4 for r in rows)
    assert all(r["vs_sync"] is not None for r in rows) and [r["vs_sync"] for r in rows if r["vec_env"] == "sync"] == [
        1,
        1,
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"env_throughput.{e}" for e in ("csv", "json", "md", "png")]
    saved = json.loads((tmp_path / "env_throughput.json").read_text())
    assert saved["machine"]["torch"] == torch.__version__ and len(saved["results"]) == 8
    table = (tmp_path / "env_throughput.md").read_text()
    assert "| N | vec env | steps/s | floor/s | ratio | vs sync |" in table and "load average" in table
    with pytest.raises(SystemExit):  # a block of 3 steps would split an episode of 2
        bench.main([*argv[:4], "--n-envs", "1", "--steps", "3", "--rounds", "1", "--episode-steps", "2"])


def test_torchrl_wraps_the_batched_env() -> None:
    """TorchRL's ``GymWrapper`` on the batched env, where TorchRL is installed (it is not a dependency, and this has
    not run in the project's environment); a TorchRL that refuses Gymnasium 1.x vector envs (pytorch/rl#2477)
    skips, naming its version."""
    torchrl = pytest.importorskip("torchrl")
    from torchrl.envs import GymWrapper

    try:
        env = GymWrapper(NSTVectorEnv(2, max_episode_steps=2, **KWARGS))
    except (TypeError, ValueError, NotImplementedError, RuntimeError) as exc:
        pytest.skip(f"TorchRL {torchrl.__version__}'s GymWrapper does not take NSTVectorEnv: {exc}")
    rollout = env.rollout(3)
    assert rollout.batch_size[0] == 2 and rollout["next", "reward"].shape[:2] == (2, 3)
