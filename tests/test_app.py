"""The web app's logic without a browser (agents.inference.sequences, quality, fitting, app; agents.cli.app): a
sequence equals ``agents.stylize``'s pixels, the scores equal ``benchmarks.metrics``, the size rules are the
command's, and every bad input gives one message. The page in a browser: tests/test_app_browser.py."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agents.cli import app as app_cli
from agents.cli import stylize
from agents.inference import app, fitting, sequences
from agents.inference.quality import StepQuality, ssim
from nst_env.images import resolve_sample

STARRY = Path(str(resolve_sample("starry_night")))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """32-64 px images: one torch thread is fastest on the shared CI cores (tests/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> sequences.ModelCache:
    return sequences.ModelCache("cpu")


@pytest.fixture(scope="module")
def quality() -> StepQuality:
    return StepQuality("cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(path)
    return path


def cli_steps(tmp_path: Path, photo: Path, steps: int, *flags: str) -> list[np.ndarray]:
    """``agents.stylize``'s step PNGs of ``photo`` (``flags``: the model, style and size)."""
    out = tmp_path / "cli"
    args = ["--content", str(photo), "--steps", str(steps), "--out", str(out), "--device", "cpu", *flags]
    assert stylize.main(args) == 0
    return [np.asarray(Image.open(p)) for p in sorted(out.glob("*_step*.png"))]


@pytest.mark.parametrize(
    "model, size, flags",
    [
        ("rlministyler_ft128", 0, ["--style", str(STARRY)]),  # the photo's own size (under the cap)
        ("rlministyler_ft128", 24, ["--style", str(STARRY), "--max-side", "24"]),
        ("rlnst:blue_swirls", 0, ["--model", "rlnst:blue_swirls"]),  # a single-style model, its own style
    ],
)
def test_sequence_equals_agents_stylize(
    tmp_path: Path,
    models: sequences.ModelCache,
    quality: StepQuality,
    photo: Path,
    model: str,
    size: int,
    flags: list[str],
) -> None:
    done: list[float] = []
    sequence = sequences.compute_sequence(
        models, photo, STARRY, model, tmp_path / "app", 3, size, quality, progress=lambda f, _: done.append(f)
    )
    expected = cli_steps(tmp_path, photo, 3, *flags)
    shown = [np.asarray(Image.open(p)) for p in sequence.steps]
    assert len(shown) == 3 and all(np.array_equal(a, b) for a, b in zip(shown, expected))
    assert not np.array_equal(shown[0], shown[-1])
    assert sequence.size == (53, 37) and Image.open(sequence.strip).size == (3 * 53, 37)
    assert Image.open(sequence.gif).n_frames == 3 and len(sequence.thumbnails) == 3
    assert [s.step for s in sequence.scores] == [0, 1, 2, 3] and sequence.scores[0].ssim == pytest.approx(1.0)
    assert all(math.isfinite(s.style_loss) and math.isfinite(s.ssim) for s in sequence.scores)
    assert done == sorted(done) and done[-1] < 1  # the progress goes forward step by step
    if size:
        assert "Processed at 24x16 (the processing size), then resized back to 53x37." in sequence.notes
    if model.startswith("rlnst"):
        assert "single-style" in sequence.notes[0] and "starry_night.jpg, is not used" in sequence.notes[0]


def test_scores_equal_the_benchmarks_metrics(quality: StepQuality, photo: Path) -> None:
    pytest.importorskip("skimage")
    from benchmarks.metrics import QualityMetrics
    from benchmarks.metrics import ssim as benchmark_ssim

    rng = np.random.default_rng(1)
    content = np.array(Image.open(photo))
    output = np.clip(content.astype(int) + rng.integers(-60, 60, content.shape), 0, 255).astype(np.uint8)
    style = np.array(Image.open(STARRY).resize((80, 64)))
    reference = QualityMetrics("cpu").reference(content, style)
    expected = QualityMetrics("cpu").evaluate(output, reference)
    assert quality.style_loss(output, quality.style_target(style)) == pytest.approx(expected["style_loss"], rel=1e-6)
    assert ssim(content, output) == pytest.approx(benchmark_ssim(content, output), abs=1e-12)
    assert math.isnan(ssim(content[:6], output[:6]))  # under the 7 px window


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A text file named like an image, a truncated JPEG and two zips that are no model."""
    files = {"text": tmp_path / "notes.png", "truncated": tmp_path / "cut.jpg"}
    files["text"].write_text("not an image")
    buffer = tmp_path / "whole.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer)
    files["truncated"].write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    files["garbage_zip"] = tmp_path / "garbage.zip"
    files["garbage_zip"].write_bytes(b"PK\x03\x04 not really a zip")
    files["other_zip"] = tmp_path / "other.zip"
    with zipfile.ZipFile(files["other_zip"], "w") as archive:
        archive.writestr("data", "{}")
    return files


@pytest.mark.parametrize(
    "case, message",
    [
        ("text photo", "The photo notes.png is not an image this app can read"),
        ("truncated photo", "The photo cut.jpg cannot be read (Cannot read image cut.jpg: image file is truncated"),
        ("text painting", "The painting notes.png is not an image"),
        ("no photo", "Choose a photo"),
        ("no painting", "Choose a painting"),
        ("garbage zip", "not a zip archive"),
        ("zip without a model", "Could not load"),
        ("missing model", "Model not found"),
        ("typed path refused", "Unknown model"),
        ("steps", "Steps must be a whole number from 1 to 50"),
        ("size", "The processing size must be 0"),
    ],
)
def test_bad_input_gives_one_message(
    tmp_path: Path, models: sequences.ModelCache, photo: Path, bad_files: dict[str, Path], case: str, message: str
) -> None:
    request = dict(photo=str(photo), style=str(STARRY), model="rlministyler_ft128", model_file=None, steps=2, size=0)
    request |= {
        "text photo": {"photo": {"path": str(bad_files["text"]), "orig_name": "notes.png"}},
        "truncated photo": {"photo": str(bad_files["truncated"])},
        "text painting": {"style": str(bad_files["text"])},
        "no photo": {"photo": None},
        "no painting": {"style": None},
        "garbage zip": {"model_file": {"path": str(bad_files["garbage_zip"]), "orig_name": "garbage.zip"}},
        "zip without a model": {"model": str(bad_files["other_zip"])},
        "missing model": {"model": str(tmp_path / "missing.zip")},
        "typed path refused": {"model": str(bad_files["other_zip"])},
        "steps": {"steps": 51},
        "size": {"size": 3},
    }[case]
    sequence, status = sequences.run_request(
        models, tmp_path / "work", allow_paths=case != "typed path refused", **request
    )  # type: ignore[arg-type]
    assert sequence is None and status.startswith("**Error:** ") and message in status
    assert "\n" not in status and (case != "garbage zip" or str(bad_files["garbage_zip"]) not in status)
    assert not list(tmp_path.glob("work/*"))  # nothing is left behind


@pytest.mark.parametrize(
    "name, note",
    [
        ("gray", "grayscale"),
        ("rgba", "transparency"),
        ("palette_transparent", "transparency"),
        ("gray16", "16-bit"),
        ("tiny", "smaller than the networks take"),
        ("one_pixel", "No SSIM"),
    ],
)
def test_odd_photos_are_stylised_with_a_note(
    tmp_path: Path, models: sequences.ModelCache, odd_images: dict[str, Path], name: str, note: str
) -> None:
    sequence, status = sequences.run_request(
        models, tmp_path, str(odd_images[name]), str(STARRY), "rlministyler", None, 1, 0
    )
    assert sequence is not None and status.startswith("**Done:** 1 step of") and note in status
    with Image.open(odd_images[name]) as original:
        assert Image.open(sequence.steps[0]).size == original.size


def test_huge_photo_is_read_smaller_and_fitted_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: sequences.ModelCache, photo: Path
) -> None:
    monkeypatch.setattr(sequences, "MAX_PHOTO_SIDE", 40)
    monkeypatch.setattr(sequences, "memory_budget", lambda device: fitting.BYTES_PER_PIXEL * 20 * 14)
    sequence, status = sequences.run_request(models, tmp_path, str(photo), str(STARRY), "rlministyler", None, 1, 0)
    assert sequence is not None and sequence.size == (40, 28) and sequence.work_size == (20, 14)
    assert "is 53x37: it is read at 40x28" in status and "the largest size that fits the memory" in status
    monkeypatch.setattr(sequences, "MAX_PIXELS", 1000)
    status = sequences.run_request(models, tmp_path, str(photo), str(STARRY), "x", None, 1, 0)[1]
    assert "The photo photo.png cannot be read" in status and "more than the 1,000 accepted" in status


def test_single_style_model_without_a_published_style(
    tmp_path: Path, models: sequences.ModelCache, quality: StepQuality, photo: Path
) -> None:
    sequence = sequences.compute_sequence(models, photo, None, "rlnst:fire", tmp_path, 2, 0, quality)
    assert sequence.painting is None and "whose image was not published" in sequence.notes[0]
    assert all(math.isnan(s.style_loss) and math.isfinite(s.ssim) for s in sequence.scores)
    assert sequence.steps[0].name == "photo__fire_step01.png"


def test_page_builds_offline_and_the_cli_binds_to_localhost(
    tmp_path: Path, models: sequences.ModelCache, quality: StepQuality
) -> None:
    gr = pytest.importorskip("gradio")
    page = app.build_app(models, quality, work_dir=tmp_path)
    assert isinstance(page, gr.Blocks) and page.analytics_enabled is False
    fonts = [*app.page_theme()._font, *app.page_theme()._font_mono]
    assert not any(isinstance(font, gr.themes.GoogleFont) for font in fonts)  # no web font to fetch
    args = app_cli.parse_args([])
    assert (args.host, args.share, args.max_file_size) == ("127.0.0.1", False, app.MAX_FILE_SIZE)
    assert app_cli.is_loopback("127.0.0.1") and app_cli.is_loopback("localhost") and app_cli.is_loopback("::1")
    assert not app_cli.is_loopback("0.0.0.0") and not app_cli.is_loopback("example.org")


def test_cli_bad_model_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    monkeypatch.setenv(app_cli.ANALYTICS_ENV, "True")  # restored afterwards; the command sets it off
    with pytest.raises(SystemExit) as exit_info:
        app_cli.main(["--model", str(tmp_path / "missing.zip"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "missing.zip: no such file" in err and len(err.strip().splitlines()) == 1
    assert app_cli.os.environ[app_cli.ANALYTICS_ENV] == "False"
