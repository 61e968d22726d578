"""Every command line meets bad input with one line naming it, exit status 2, no traceback and no half-written
files; images smaller than the networks take are stylised (at the smallest size that works) and resized back."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from agents.cli import export_onnx, stylize, train, train_sac
from agents.inference.models import load_policy
from agents.inference.runners import FrameStylizer, image_to_tensor, prepare_style, stylize_sequence, tensor_to_image
from agents.networks import MiniStylerActor, StyleCode
from agents.style_sac import ActorBuilderPolicy
from agents.training import checkpoints
from benchmarks import compare_algorithms, env_throughput, quality, speed, train_throughput, video_temporal


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad input files of every class: images, zips, videos, run folders."""
    folder = tmp_path_factory.mktemp("bad")
    files = {
        name: folder / name
        for name in (
            "empty.png",
            "text.jpg",
            "truncated.png",
            "truncated.jpg",
            "not_zip.zip",
            "truncated.zip",
            "damaged.zip",
            "no_model.zip",
            "other.zip",
            "empty_video.avi",
            "text.avi",
            "no_checkpoint",
            "orphan/checkpoints",
        )
    }
    files["empty.png"].write_bytes(b"")
    files["text.jpg"].write_text("not an image")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name, fmt in (("truncated.png", "PNG"), ("truncated.jpg", "JPEG")):
        Image.fromarray(rgb).save(files[name], format=fmt)
        files[name].write_bytes(files[name].read_bytes()[: files[name].stat().st_size // 2])
    files["not_zip.zip"].write_bytes(b"\x00" * 100)
    for name, members in (
        ("truncated.zip", ("data", "policy.pth")),
        ("damaged.zip", ("data", "policy.pth")),
        ("no_model.zip", ("readme.txt",)),
        ("other.zip", ("data", "policy.pth")),
    ):
        with zipfile.ZipFile(files[name], "w", zipfile.ZIP_STORED) as archive:
            for member in members:
                archive.writestr(member, "{}" * 500)
    content = files["truncated.zip"].read_bytes()
    files["truncated.zip"].write_bytes(content[: len(content) // 2])
    damaged = bytearray(files["damaged.zip"].read_bytes())
    damaged[100:110] = b"X" * 10  # inside the first member: its checksum fails
    files["damaged.zip"].write_bytes(bytes(damaged))
    writer = cv2.VideoWriter(str(files["empty_video.avi"]), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    writer.release()  # a container without a single frame
    files["text.avi"].write_text("not a video")
    files["no_checkpoint"].mkdir()
    files["orphan/checkpoints"].mkdir(parents=True)  # a checkpoint outside a run folder (no config.yml)
    (files["orphan/checkpoints"] / "rl_model_5_steps.zip").write_bytes(files["other.zip"].read_bytes())
    run = folder / "other_algo"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "rl_model_5_steps.zip").write_bytes(files["other.zip"].read_bytes())
    (run / "config.yml").write_text(yaml.safe_dump({"algo": "sac", "env_id": "NST-v0"}))
    files["other_algo"] = run
    run = folder / "style_sac_junk"  # a StyleSAC run folder whose checkpoint is not a StyleSAC model
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "rl_model_5_steps.zip").write_bytes(files["other.zip"].read_bytes())
    (run / "config.yml").write_text(
        yaml.safe_dump(
            {"algo": "style_sac", "env_id": "NST-v0", "n_envs": 1, "seed": 0, "env_kwargs": {"image_size": 16}}
        )
    )
    files["junk_run"] = run
    return files


def expect_usage_error(
    main: Callable[[list[str]], object], argv: list[str], capsys: pytest.CaptureFixture, *expected: str
) -> str:
    """Run ``main(argv)``; check exit status 2, one ``error`` line holding ``expected``, and no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


TRAIN_FLAGS = ["--image-size", "16", "--no-progress", "-v", "0", "--eval-freq", "0"]


@pytest.mark.parametrize("main", [train_sac.main, train.main], ids=["train_sac", "train"])
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--image-size", "-5"], ("--image-size", "from 16 to 4096", "-5")),
        (["--image-size", "100000"], ("--image-size", "100000")),
        (["-n", "0"], ("--n-timesteps", ">= 1")),
        (["-n", "ten"], ("--n-timesteps", "'ten'")),
        (["--save-freq", "-1"], ("--save-freq",)),
        (["--n-envs", "0"], ("--n-envs",)),
        (["--seed", "-3"], ("--seed",)),
        (["--max-minutes", "-1"], ("--max-minutes",)),
        (["--device", "gpu0"], ("--device", "'gpu0'")),
        (["--hyperparams", "batch_size=4"], ("KEY:VALUE", "batch_size=4")),
        (["--hyperparams", "batch_size:[1"], ("batch_size:[1", "YAML")),
        (["--hyperparams", "nonsense_key:1"], ("nonsense_key", "expected one of")),
        (["--hyperparams", "policy_kwargs.bogus:1"], ("bogus",)),
        (["--hyperparams", "batch_size:-4"], ("batch_size", ">= 1", "-4")),
        (["--hyperparams", "buffer_size:0"], ("buffer_size", ">= 1")),
        (["--hyperparams", "learning_rate:abc"], ("learning rate", "abc")),
        (["--hyperparams", "policy_kwargs:5"], ("hyper-parameters do not fit",)),
    ],
)
def test_training_rejects_bad_flags_leaving_no_run_folder(
    main: Callable, argv: list[str], expected: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    expect_usage_error(main, ["-f", str(tmp_path / "runs"), "-n", "3", *TRAIN_FLAGS, *argv], capsys, *expected)
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


@pytest.mark.parametrize(
    "resume, expected",
    [
        ("missing", ("no such run folder",)),
        ("no_checkpoint", ("rl_model_<steps>_steps.zip", "there is none")),
        ("not_zip.zip", ("not a zip archive",)),
        ("truncated.zip", ("not a zip archive",)),
        ("damaged.zip", ("damaged zip",)),
        ("no_model.zip", ("not a Stable-Baselines3 model",)),
        ("orphan/checkpoints/rl_model_5_steps.zip", ("config.yml",)),
        ("other_algo", ("trained with sac",)),
        ("junk_run", ("cannot load", "StyleSAC")),
    ],
)
def test_resume_rejects_what_it_cannot_continue(
    resume: str, expected: tuple[str, ...], bad: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = bad.get(resume, bad["empty.png"].parent / resume)
    kept = sorted(path.glob("checkpoints/*")) + sorted(path.glob("*.yml"))
    before = [p.read_bytes() for p in kept]
    expect_usage_error(train_sac.main, ["--resume", str(path), *TRAIN_FLAGS], capsys, *expected)
    assert [p.read_bytes() for p in kept] == before  # checkpoints and configuration untouched


def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(bad: dict[str, Path], capsys) -> None:
    run = bad["junk_run"]
    newest = run / "checkpoints" / "rl_model_10_steps.zip"
    newest.write_bytes(bad["truncated.zip"].read_bytes())
    try:
        assert checkpoints.latest_checkpoint(run).name == "rl_model_5_steps.zip"
        assert f"skipping {newest}" in capsys.readouterr().err
    finally:
        newest.unlink()


def test_training_with_an_unusable_data_folder_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    expect_usage_error(
        train_sac.main,
        ["-f", str(tmp_path / "runs"), "--content-dir", str(tmp_path / "empty"), *TRAIN_FLAGS],
        capsys,
        "No usable image",
        "empty",
    )
    assert list((tmp_path / "runs").iterdir()) == []


def stylize_args(tmp_path: Path, *argv: str) -> list[str]:
    return ["--device", "cpu", "--steps", "1", "--out", str(tmp_path / "out"), *argv]


@pytest.mark.parametrize("role", ["--content", "--style"])
@pytest.mark.parametrize(
    "name, expected",
    [
        ("missing.png", ("missing.png",)),
        ("empty.png", ("empty.png", "Cannot read image")),
        ("text.jpg", ("text.jpg", "Cannot read image")),
        ("truncated.png", ("truncated.png", "Cannot read image")),
        ("truncated.jpg", ("truncated.jpg", "Cannot read image")),
    ],
)
def test_stylize_reports_unreadable_images(
    role: str, name: str, expected: tuple[str, ...], bad: dict[str, Path], tmp_path: Path, capsys
) -> None:
    path = bad["empty.png"].parent / name
    other = "--style" if role == "--content" else "--content"
    argv = stylize_args(tmp_path, role, str(path), other, "starry_night" if other == "--style" else "chelsea")
    expect_usage_error(stylize.main, argv, capsys, *expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "model, expected",
    [
        ("missing.zip", ("Model not found",)),
        ("not_zip.zip", ("not a zip archive",)),
        ("truncated.zip", ("not a zip archive",)),
        ("damaged.zip", ("Could not load",)),
        ("no_model.zip", ("Could not load",)),
        ("other.zip", ("Could not load",)),
        ("rlnst:nope", ("Model not found",)),
    ],
)
def test_stylize_and_export_report_bad_models(
    model: str, expected: tuple[str, ...], bad: dict[str, Path], tmp_path: Path, capsys
) -> None:
    path = model if ":" in model else str(bad["empty.png"].parent / model)
    expect_usage_error(
        stylize.main,
        stylize_args(tmp_path, "--model", path, "--content", "chelsea", "--style", "starry_night"),
        capsys,
        *expected,
    )
    expect_usage_error(export_onnx.main, ["--model", path, "--out", str(tmp_path / "m.onnx")], capsys, *expected)
    assert not (tmp_path / "out").exists() and list(tmp_path.glob("*.onnx")) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "rlnst:fire", "--out", "x.onnx"], ("Only MiniStylerPolicy",)),
        (["--out", "x.onnx", "--opset", "5"], ("--opset",)),
        (["--out", "x.onnx", "--atol", "-1"], ("--atol",)),
        (["--out", "x.onnx", "--atol", "nan"], ("--atol",)),
    ],
)
def test_export_onnx_rejects_bad_arguments(
    argv: list[str], expected: tuple[str, ...], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expect_usage_error(export_onnx.main, argv, capsys, *expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--steps", "0"], ("--steps", "from 1 to 1000", "0")),
        (["--steps", "-3"], ("--steps",)),
        (["--steps", "100000"], ("--steps",)),
        (["--max-side", "0"], ("--max-side", ">= 5")),
        (["--max-side", "-5"], ("--max-side",)),
        (["--style-size", "-1"], ("--style-size", "0, none or an integer from 5 to 1024", "'-1'")),
        (["--style-size", "2.5"], ("--style-size", "'2.5'")),
        (["--style-size", "3"], ("--style-size", "'3'")),
        (["--style-size", "4096"], ("--style-size", "'4096'")),
        (["--device", "gpu"], ("--device",)),
        (["--style", "no_such_style"], ("no_such_style",)),
    ],
)
def test_stylize_rejects_bad_flags(argv: list[str], expected: tuple[str, ...], tmp_path: Path, capsys) -> None:
    base = ["--content", "chelsea", "--style", "starry_night", "--out", str(tmp_path / "out"), "--device", "cpu"]
    expect_usage_error(stylize.main, [*base, *argv], capsys, *expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "video, expected",
    [
        ("missing.avi", ("No such video file", "missing.avi")),
        ("text.avi", ("text.avi",)),
        ("empty_video.avi", ("empty_video.avi",)),
    ],
)
def test_stylize_reports_unusable_videos(
    video: str, expected: tuple[str, ...], bad: dict[str, Path], tmp_path: Path, capsys
) -> None:
    argv = [
        "--video",
        str(bad["empty.png"].parent / video),
        "--style",
        "starry_night",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    expect_usage_error(stylize.main, argv, capsys, *expected)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "main, argv, expected",
    [
        (compare_algorithms.main, ["-n", "0"], "--n-timesteps"),
        (compare_algorithms.main, ["--image-size", "8"], "--image-size"),
        (env_throughput.main, ["--sizes", "-64"], "--sizes"),
        (env_throughput.main, ["--steps", "0"], "--steps"),
        (quality.main, ["--pairs", "0"], "--pairs"),
        (quality.main, ["--strengths", "2"], "--strengths"),
        (quality.main, ["--style-sizes", "256", "-5"], "--style-sizes"),
        (
            quality.main,
            [
                "--model",
                "/no/such/model.zip",
                "--pairs",
                "1",
                "--size",
                "16",
                "--strengths",
                "--gatys-iterations",
                "--threads",
                "1",
            ],
            "Model not found",
        ),
        (speed.main, ["--repeats", "0"], "--repeats"),
        (speed.main, ["--budget-s", "-1"], "--budget-s"),
        (speed.main, ["--model", "/no/such/model.zip"], "Model not found"),
        (train_throughput.main, ["--sizes", "0"], "--sizes"),
        (train_throughput.main, ["--chunk", "0"], "--chunk"),
        (video_temporal.main, ["--frames", "1"], "--frames"),
        (video_temporal.main, ["--video", "/no/such/video.avi", "--video-model", "/no/model.zip"], "No such video"),
    ],
)
def test_benchmarks_reject_bad_input(main: Callable, argv: list[str], expected: str, tmp_path: Path, capsys) -> None:
    expect_usage_error(main, [*argv, "--out", str(tmp_path / "out")], capsys, expected)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "content, style", [((1, 1), (4, 4)), ((4, 4), (1, 1)), ((1, 30), (3, 700)), ((3, 700), (1, 9))]
)
def test_stylize_takes_images_smaller_than_the_networks(
    content: tuple[int, int], style: tuple[int, int], tmp_path: Path, capsys
) -> None:
    rng = np.random.default_rng(0)
    for name, (h, w) in (("c.png", content), ("s.png", style)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    code = stylize.main(
        stylize_args(tmp_path, "--content", str(tmp_path / "c.png"), "--style", str(tmp_path / "s.png"), "--steps", "2")
    )
    assert code == 0
    assert Image.open(tmp_path / "out" / "c__s_step02.png").size == (content[1], content[0])  # its own size
    assert "smaller than the networks take" in capsys.readouterr().out or min(content) >= 5


@pytest.mark.parametrize("kind", ["gray", "rgba", "gray16_large", "cmyk", "palette_transparent", "one_pixel", "tiny"])
def test_stylize_takes_every_image_kind(kind: str, odd_images: dict[str, Path], tmp_path: Path) -> None:
    argv = stylize_args(tmp_path, "--content", str(odd_images[kind]), "--style", str(odd_images[kind]))
    assert stylize.main(argv) == 0
    with Image.open(odd_images[kind]) as source, Image.open(next((tmp_path / "out").glob("*_step01.png"))) as out:
        assert out.size == source.size


def run_steps(
    policy: ActorBuilderPolicy, photo: np.ndarray, style: torch.Tensor, steps: int, code: StyleCode | None = None
) -> list[torch.Tensor]:
    """``steps`` deterministic ``policy.act`` calls from ``photo``; with ``code``, reusing that style code."""
    moving, outputs = image_to_tensor(photo, "cpu"), []
    reuse = {} if code is None else {"style_code": code}
    with torch.no_grad():
        for _ in range(steps):
            _, moving = policy.act({"moving": moving, "style": style}, deterministic=True, **reuse)
            outputs.append(moving)
    return outputs


@pytest.mark.parametrize("model", ["rlministyler", "rlnst:blue_swirls"])
def test_style_encoded_once_matches_the_per_step_path(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps and photos that reuse one style code give the per-step path's images within 1e-5."""
    policy = load_policy(model, "cpu")
    policy.set_training_mode(False)
    rng = np.random.default_rng(1)
    style = rng.integers(0, 256, (41, 37, 3), dtype=np.uint8)
    photos = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((24, 20), (17, 30))]
    prepared = prepare_style(policy, style)
    calls = []
    original = MiniStylerActor.encode_style
    monkeypatch.setattr(MiniStylerActor, "encode_style", lambda self, image: calls.append(1) or original(self, image))
    for photo in photos:
        per_step = run_steps(policy, photo, image_to_tensor(style, "cpu"), 3)
        encodings = len(calls)
        reused = run_steps(policy, photo, prepared.image, 3, prepared.code)
        frames = FrameStylizer(policy, prepared, (1, 2, 3))(photo)
        assert len(calls) == encodings  # no style encoding in the reused path
        for step, (expected, got) in enumerate(zip(per_step, reused), 1):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
            assert np.abs(frames[step].astype(int) - tensor_to_image(expected).astype(int)).max() <= 1  # rounding
    assert [o.shape for o in stylize_sequence(policy, photos[0], prepared, 2)] == [photos[0].shape] * 2
