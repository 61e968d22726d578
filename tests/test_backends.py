"""The stylisation backends (:mod:`agents.inference.backends`): PyTorch (channels_last, inference mode, float16 on CUDA)
and ONNX Runtime (cached export, int8), equal outputs, and ``agents.stylize --backend``'s choices and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli_errors import expect_usage_error

from agents.cli import export_onnx, stylize
from agents.inference.backends import make_runner
from agents.inference.models import load_policy
from agents.inference.onnx import OnnxRunner, cached_export, style_encoder_path
from agents.inference.runners import (
    MATCH_CONTENT,
    FrameStylizer,
    PreparedStyle,
    StyleEncodings,
    TorchRunner,
    stylize_sequence,
)
from benchmarks.quantize import export_int8
from nst_env.images import load_image, resize, resolve_sample

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def sample(name: str, height: int, width: int) -> np.ndarray:
    return resize(load_image(resolve_sample(name)), width, height)


def run_steps(runner: object, steps: int = 3) -> list[np.ndarray]:
    """The float moving images of ``steps`` deterministic steps of chelsea x starry_night (37 x 42 px)."""
    style = runner.prepare(sample("starry_night", 30, 20))
    moving = runner.load(sample("chelsea", 37, 42))
    outputs = []
    for step in range(steps):
        moving = runner.step(moving, style, 0, step, True)
        outputs.append(np.asarray(moving.cpu() if isinstance(moving, torch.Tensor) else moving, dtype=np.float32))
    return outputs


def test_onnx_and_channels_last_match_pytorch(tmp_path: Path, capsys) -> None:
    policy = load_policy("rlministyler", "cpu")
    plain = run_steps(TorchRunner(policy))
    path = cached_export(policy, tmp_path)
    assert "exported the model" in capsys.readouterr().out
    fast = run_steps(TorchRunner(policy, channels_last=True))
    onnx = run_steps(OnnxRunner(path))
    for reference, channels_last, exported in zip(plain, fast, onnx):
        assert np.abs(channels_last - reference).max() < 1e-5
        assert np.abs(exported - reference).max() < 1e-3
    mtime = path.stat().st_mtime_ns
    assert cached_export(policy, tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused, not re-exported
    assert "exported" not in capsys.readouterr().out
    assert cached_export(load_policy("rlministyler", "cpu"), tmp_path) == path  # keyed by the weights
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, style_encoder_path(path).name])


def test_stylize_backends_agree_and_explain_themselves(tmp_path: Path, capsys) -> None:
    content = tmp_path / "photo.png"
    Image.fromarray(sample("chelsea", 29, 33)).save(content)
    base = ["--content", str(content), "--style", "starry_night", "--steps", "2", "--device", "cpu"]
    for backend in ("torch", "onnx", "auto"):
        assert stylize.main([*base, "--out", str(tmp_path / backend), "--backend", backend]) == 0
    assert "note: running in PyTorch" not in capsys.readouterr().out
    images = {
        b: np.asarray(Image.open(tmp_path / b / "photo__starry_night_step02.png"), int) for b in ("torch", "onnx")
    }
    assert np.abs(images["torch"] - images["onnx"]).max() <= 1  # float outputs within 1e-3: one uint8 level
    single = ["--model", "rlnst:blue_swirls", "--content", str(content), "--steps", "1", "--device", "cpu"]
    assert stylize.main([*single, "--out", str(tmp_path / "rlnst")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: running in PyTorch")]
    assert len(notes) == 1 and "RLNSTPolicy" in notes[0]
    out = ["--out", str(tmp_path / "bad")]
    expect_usage_error(stylize.main, [*single, *out, "--backend", "onnx"], capsys, "--backend onnx", "RLNSTPolicy")
    expect_usage_error(stylize.main, [*base, *out, "--backend", "onnx", "--sample"], capsys, "--sample")
    expect_usage_error(stylize.main, [*base, *out, "--half"], capsys, "--half needs a CUDA device")
    assert not (tmp_path / "bad").exists()


def test_style_size_resizes_the_style_before_it_is_encoded(tmp_path: Path) -> None:
    """``--style-size`` (both runners' ``prepare``): a 128 x 96 style encoded at 64 px gives other outputs than at
    its own size, the same as the style resized beforehand; the default, ``content``, is the photo's longer side
    (24 px here), ``0`` and ``none`` the style as read."""
    policy = load_policy("rlministyler", "cpu")
    content, style = sample("chelsea", 24, 20), sample("starry_night", 96, 128)
    for runner in (TorchRunner(policy), make_runner(policy, "onnx")):
        own = stylize_sequence(runner, content, style, 1)[0].astype(int)
        small = stylize_sequence(runner, content, style, 1, style_size=64)[0].astype(int)
        assert np.array_equal(small, stylize_sequence(runner, content, resize(style, 64, 48), 1)[0])
        assert np.abs(own - small).max() > 1, type(runner).__name__
    Image.fromarray(content).save(tmp_path / "photo.png")
    Image.fromarray(style).save(tmp_path / "art.png")
    base = ["--content", str(tmp_path / "photo.png"), "--style", str(tmp_path / "art.png"), "--steps", "1"]
    outputs = {}
    for size in ("default", "content", "24", "0", "none", "64"):
        flags = [] if size == "default" else ["--style-size", size]
        argv = [*base, *flags, "--device", "cpu", "--backend", "torch", "--out", str(tmp_path / size)]
        assert stylize.main(argv) == 0
        outputs[size] = np.asarray(Image.open(tmp_path / size / "photo__art_step01.png"), int)
    assert np.array_equal(outputs["content"], outputs["default"]) and np.array_equal(outputs["24"], outputs["default"])
    assert np.array_equal(outputs["none"], outputs["0"])
    assert np.abs(outputs["64"] - outputs["0"]).max() > 1 and np.abs(outputs["0"] - outputs["default"]).max() > 1


class CountingRunner(TorchRunner):
    """A :class:`TorchRunner` that records the longer side of every style encoding it is asked for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: list[int | None] = []

    def prepare(self, style: np.ndarray, size: int | None = None) -> PreparedStyle:
        self.encoded.append(size)
        return super().prepare(style, size)


def test_style_matched_to_the_content_is_encoded_once_per_content_size() -> None:
    """``style_size="content"``: the style is encoded at each photo's longer side (capped by ``max_side``),
    once for a video's frames or photos of one size, again when the size changes; a fixed size is encoded once."""
    runner = CountingRunner(load_policy("rlministyler", "cpu"))
    style = sample("starry_night", 40, 30)
    encodings = StyleEncodings(runner, style, MATCH_CONTENT, max_side=48)
    stylizer = FrameStylizer(runner, encodings, [1])
    for frame in (
        sample("chelsea", 24, 20),
        sample("astronaut", 20, 24),
        sample("chelsea", 32, 16),
        sample("chelsea", 64, 64),
    ):
        stylizer(frame)
    assert runner.encoded == [24, 32, 48]
    matched = stylize_sequence(runner, sample("chelsea", 24, 20), style, 1, style_size=MATCH_CONTENT)[0]
    assert np.array_equal(matched, stylize_sequence(runner, sample("chelsea", 24, 20), style, 1, style_size=24)[0])
    runner.encoded.clear()
    fixed = FrameStylizer(runner, style, [1], style_size=16)
    for frame in (sample("chelsea", 24, 20), sample("chelsea", 32, 16)):
        fixed(frame)
    assert runner.encoded == [16]
    with pytest.raises(ValueError, match="style size"):
        StyleEncodings(runner, style, "large")


def test_int8_export_stays_close_to_float(tmp_path: Path) -> None:
    float_path, int8_path = tmp_path / "step.onnx", tmp_path / "step_int8.onnx"
    assert export_onnx.main(["--out", str(float_path)]) == 0
    export_int8(load_policy("rlministyler", "cpu"), int8_path)  # benchmarks' measuring tool (benchmarks.quantize)
    assert int8_path.stat().st_size < float_path.stat().st_size and style_encoder_path(int8_path).is_file()
    exact, quantised = run_steps(OnnxRunner(float_path), 2), run_steps(OnnxRunner(int8_path), 2)
    for reference, output in zip(exact, quantised):
        assert output.shape == (1, 3, 37, 42) and 0.0 <= output.min() and output.max() <= 1.0
        assert np.abs(output - reference).mean() < 0.08  # measured 0.045-0.06 per step (calibration, 32 px steps)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_float16_on_cuda_stays_within_one_level() -> None:
    """The check behind ``--half`` becoming CUDA's default: 10 steps at 256 px within 1/255 of float32."""
    policy = load_policy("rlministyler", "cuda")
    content, style = sample("chelsea", 256, 256), sample("starry_night", 256, 256)
    exact = FrameStylizer(TorchRunner(policy, channels_last=True), style, range(1, 11))(content)
    half = FrameStylizer(TorchRunner(policy, channels_last=True, half=True), style, range(1, 11))(content)
    for step in exact:
        assert np.abs(exact[step].astype(int) - half[step].astype(int)).max() <= 1, step
