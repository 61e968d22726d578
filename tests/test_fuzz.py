"""Property-based fuzzing (Hypothesis) of what a stranger can hand the package; each property runs a few dozen
cases in the default suite and a longer budget under ``-m fuzz`` (``*_long``); every find is kept below as a
regression case (docs/reliability.md lists them and the cases run).

- images (random bytes, damaged and valid files of every mode and format, bomb headers): a decoded ``H x W x 3``
  uint8 image or one :class:`~nst_env.images.ImageReadError`, never another exception;
- ``NST-v0`` at 16 px (actions of any shape, dtype and value; ``reset`` options of wrong types): a
  ``ValueError``/``TypeError`` (``FileNotFoundError`` for a missing path), and the env still steps afterwards;
- ``agents.cli.stylize.main`` and ``agents.cli.train_sac.main`` with drawn flag values: exit 0, or
  ``SystemExit(2)`` ending in one line, never a traceback, and no half-written file left.
"""

from __future__ import annotations

import functools
import io
import resource
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import nst_env  # noqa: F401  (registers NST-v0)
from agents.cli import stylize, train_sac
from agents.training import experiment
from nst_env.images import DEFAULT_MAX_PIXELS, ImageReadError, load_image

SHORT, LONG = 50, 1000  # cases per property in the default suite, and under -m fuzz
CLI_SHORT, CLI_LONG = 6, 30  # the command lines run whole models: fewer
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
FOLDER = Path(tempfile.mkdtemp(prefix="rl_nst_fuzz_"))
IMAGES = FOLDER / "images"


@pytest.fixture(scope="module", autouse=True)
def remove_folder():
    """The cases' files and run folders go when the module is done."""
    yield
    shutil.rmtree(FOLDER, ignore_errors=True)


def both(examples: tuple[int, int], **strategies) -> Callable[[Callable], tuple[Callable, Callable]]:
    """A property as two tests: the default suite's, with ``examples[0]`` cases drawn the same way every run
    (derandomised, no example database: a failure is the code's, not the draw's), and a ``fuzz``-marked one
    with ``examples[1]`` fresh random cases (failures are kept in ``.hypothesis/`` and replayed first)."""

    def make(check: Callable) -> tuple[Callable, Callable]:
        short, long = examples
        common = dict(deadline=None, suppress_health_check=SLOW_OK)
        quick = settings(max_examples=short, derandomize=True, database=None, **common)(given(**strategies)(check))
        slow = settings(max_examples=long, **common)(given(**strategies)(check))
        return quick, pytest.mark.fuzz(slow)

    return make


def write(data: bytes, suffix: str = ".img") -> Path:
    (FOLDER / f"case{suffix}").write_bytes(data)
    return FOLDER / f"case{suffix}"


def decodes_or_refuses(path: Path, **kwargs) -> np.ndarray | None:
    """The property every file must have: an ``H x W x 3`` uint8 image, or one ImageReadError."""
    try:
        image = load_image(path, **kwargs)
    except ImageReadError as exc:
        assert "\n" not in str(exc).strip()
        return None
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    return image


# ------------------------------------------------------------------------------------------------ images
SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"GIF87a", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
SIGNATURES += [b"II*\x00", b"MM\x00*", b"BM", b"P6\n"]
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LA", "YCbCr"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


def image_bytes(mode: str, fmt: str, width: int, height: int, seed: int) -> bytes | None:
    """A small random image in ``mode`` saved as ``fmt`` (``None``: Pillow cannot write that combination)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    try:
        image = rgb.convert(mode) if mode not in ("I;16", "I", "F") else rgb.convert("L").convert(mode)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 12: "Saving I mode images as PNG"
            image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buffer.getvalue()


#: Strategies of a small image file: its mode, format, size and pixels' seed.
IMAGE_FILES = {
    "mode": st.sampled_from(MODES),
    "fmt": st.sampled_from(sorted(FORMATS)),
    "width": st.integers(1, 24),
    "height": st.integers(1, 24),
    "seed": st.integers(0, 2**16),
}


@both((SHORT, LONG), signature=st.sampled_from(SIGNATURES), body=st.binary(max_size=2048))
def check_random_bytes(signature: bytes, body: bytes) -> None:
    decodes_or_refuses(write(signature + body))


test_random_bytes, test_random_bytes_long = check_random_bytes


@both(
    (SHORT, LONG),
    **IMAGE_FILES,
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=4),
)
def check_damaged_files(
    mode: str, fmt: str, width: int, height: int, seed: int, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = image_bytes(mode, fmt, width, height, seed)
    assume(data is not None)
    damaged = bytearray(data[: max(1, int(len(data) * cut))] if cut < 1.0 else data)
    for where, value in flips:
        damaged[min(len(damaged) - 1, int(where * len(damaged)))] = value
    decodes_or_refuses(write(bytes(damaged), FORMATS[fmt]))


test_damaged_files, test_damaged_files_long = check_damaged_files


@both(
    (SHORT, LONG),
    **IMAGE_FILES,
    max_side=st.one_of(st.none(), st.integers(1, 32)),
)
def check_valid_files_decode(mode: str, fmt: str, width: int, height: int, seed: int, max_side: int | None) -> None:
    """Every mode Pillow writes in every format decodes (1x1 and 16-bit included) at the expected size."""
    data = image_bytes(mode, fmt, width, height, seed)
    # Pillow writes YCbCr TIFFs without the subsampling tag, whose default (2 x 2) its reader then expects
    assume(data is not None and (mode, fmt) != ("YCbCr", "TIFF"))
    image = decodes_or_refuses(write(data, FORMATS[fmt]), max_side=max_side)
    assert image is not None, (mode, fmt, width, height)
    if max_side is None or max(width, height) <= max_side:
        assert image.shape[:2] == (height, width)
    else:
        assert max(image.shape[:2]) <= max_side


test_valid_files_decode, test_valid_files_decode_long = check_valid_files_decode


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2, idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD declares ``width x height`` 8-bit RGB in one strip of 3 bytes."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2), (273, 4, 8 + 2 + 12 * 9 + 4)]
    entries += [(277, 3, 3), (278, 4, height), (279, 4, 3)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00\x00\x00"


def patched_dimensions(fmt: str, width: int, height: int) -> bytes:
    """A real 8 x 8 JPEG or GIF whose header is edited to declare ``width x height``."""
    data = bytearray(image_bytes("RGB", fmt, 8, 8, 0) or b"")
    if fmt == "JPEG":
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    else:  # GIF: the logical screen and the first image descriptor
        data[6:10] = struct.pack("<HH", width, height)
        descriptor = data.index(b"\x2c")
        data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


BOMBS = {
    "png_15k": (lambda: png_header(15_000, 15_000), ".png"),
    "png_100k": (lambda: png_header(100_000, 100_000), ".png"),
    "tiff_15k": (lambda: tiff_header(15_000, 15_000), ".tif"),
    "tiff_100k": (lambda: tiff_header(100_000, 100_000), ".tif"),
    "jpeg_15k": (lambda: patched_dimensions("JPEG", 15_000, 15_000), ".jpg"),
    "gif_15k": (lambda: patched_dimensions("GIF", 15_000, 15_000), ".gif"),
}


def max_rss_mb() -> float:  # the process's peak resident memory so far
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_headers_are_refused_before_decoding(name: str) -> None:
    make, suffix = BOMBS[name]
    before = max_rss_mb()
    with pytest.raises(ImageReadError, match="declares .* more than the 64,000,000 accepted"):
        load_image(write(make(), suffix))
    assert max_rss_mb() - before < 200  # nothing of the declared size was allocated
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's guard stays on for the rest of the process


def test_a_compressed_15000px_png_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """The issue's case: a few hundred KB of PNG that decompresses to 15,000 x 15,000 px (225 MB of gray)."""
    row = b"\x00" * 15_001  # filter byte + one row of zeros
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(15_000)) + packer.flush()
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(15_000, 15_000, colour=0, idat=idat))
    assert path.stat().st_size < 1_000_000
    before = max_rss_mb()
    with pytest.raises(ImageReadError, match="declares 225,000,000 pixels"):
        load_image(path)
    assert max_rss_mb() - before < 200


def test_the_pixel_bound_can_be_raised_for_one_call(tmp_path: Path) -> None:
    """A 10,000 x 10,000 header: refused by default; with max_pixels raised past Pillow's own limit the file
    is decoded (and found truncated here), and Pillow's limit is back afterwards."""
    path = tmp_path / "big.png"
    path.write_bytes(png_header(10_000, 10_000, colour=0))
    with pytest.raises(ImageReadError, match="declares 10000x10000 = 100,000,000 pixels"):
        load_image(path)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError) as raised:
        load_image(path, max_pixels=200_000_000)
    assert "declares" not in str(raised.value) and "truncated" in str(raised.value)
    assert Image.MAX_IMAGE_PIXELS == limit and DEFAULT_MAX_PIXELS == 64_000_000


def test_exif_rotated_photos_come_upright(tmp_path: Path) -> None:
    """Orientation 6 (rotate 90 degrees clockwise to view): a 4 x 2 stored image is shown 2 x 4."""
    stored = np.zeros((2, 4, 3), dtype=np.uint8)
    stored[0, 0, 0] = 255  # top-left when stored: red
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    image = load_image(tmp_path / "rotated.png")
    assert image.shape == (4, 2, 3) and image[0, 1].tolist() == [255, 0, 0]


def test_pillow_guard_is_on_after_importing_the_package() -> None:
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)


def test_a_source_of_the_wrong_type_is_a_type_error() -> None:
    for source in (5, None, b"chelsea.jpg", ["a"]):
        with pytest.raises(TypeError, match="image path"):
            load_image(source)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ the env
@pytest.fixture(scope="module")
def env(single_torch_thread: None) -> gym.Env:
    return gym.make("NST-v0", image_size=16, device="cpu")


SHAPE = (3, 16, 16)
DTYPES = st.one_of(
    hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(), hnp.datetime64_dtypes(), hnp.timedelta64_dtypes(), hnp.unicode_string_dtypes(),
    hnp.byte_string_dtypes(), st.just(np.dtype(object)),
)  # fmt: skip
ACTIONS = st.one_of(
    hnp.arrays(DTYPES, st.one_of(st.just(SHAPE), hnp.array_shapes(min_dims=0, max_dims=4, max_side=17))),
    hnp.arrays(hnp.floating_dtypes(), SHAPE, elements=st.floats(allow_nan=True, allow_infinity=True, width=16)),
    hnp.arrays(np.float64, SHAPE, elements=st.floats(-1e300, 1e300)),
    st.none(),
    st.text(max_size=5),
    st.lists(st.floats(), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def still_steps(env: gym.Env) -> None:
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.full(SHAPE, 0.5, dtype=np.float32))
    assert obs["moving"].shape == SHAPE and np.isfinite(reward)


@both((SHORT, LONG), action=ACTIONS)
def check_env_actions(env: gym.Env, action) -> None:
    env.reset(seed=0)
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except (ValueError, TypeError) as exc:
        assert "action" in str(exc) and "\n" not in str(exc), exc
    else:
        assert obs["moving"].dtype == np.uint8 and np.isfinite(reward) and not terminated
    still_steps(env)


test_env_actions, test_env_actions_long = check_env_actions


OPTION_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["chelsea", "starry_night", "/no/such/image.png"]),
    hnp.arrays(st.sampled_from([np.uint8, np.float32, np.int64, object]), hnp.array_shapes(max_dims=4, max_side=6)),
    st.lists(st.integers(), max_size=3),
)
OPTIONS = st.one_of(
    st.none(),
    OPTION_VALUES,
    st.lists(st.sampled_from(["content", "style"]), max_size=2),
    st.dictionaries(st.sampled_from(["content", "style", "moving", "", "seed"]), OPTION_VALUES, max_size=3),
)


@both((SHORT, LONG), options=OPTIONS)
def check_env_reset_options(env: gym.Env, options) -> None:
    try:
        obs, _ = env.reset(options=options)
    except FileNotFoundError as exc:
        assert "not found" in str(exc)
    except (ValueError, TypeError) as exc:
        assert ("option" in str(exc) or "image" in str(exc)) and "\n" not in str(exc), exc
    else:
        assert obs["moving"].shape == SHAPE
    still_steps(env)


test_env_reset_options, test_env_reset_options_long = check_env_reset_options


#: What the fuzzing found ending in another exception or an unclear message, kept as regression cases.
ACTION_FINDS = {
    "object": np.empty(SHAPE, dtype=object),  # numpy's "ufunc 'isfinite' not supported" TypeError
    "text": np.full(SHAPE, "a"),
    "complex": np.full(SHAPE, 0.5 + 1j),  # was accepted, the imaginary part dropped with a ComplexWarning
    "datetime": np.zeros(SHAPE, dtype="datetime64[s]"),  # UFuncTypeError from np.clip
    "timedelta": np.zeros(SHAPE, dtype="timedelta64[s]"),
}
OPTION_FINDS = {
    "a list of names": ["content"],  # AttributeError: 'list' object has no attribute 'get'
    "a number": 5,  # "'int' object is not iterable"
    "a string": "content",  # "Unknown reset options ['c', 'e', 'n', 'o', 't']"
    "mixed keys": {1: "a", "b": 2},  # sorting the unknown keys raised TypeError
}


@pytest.mark.parametrize("name", sorted(ACTION_FINDS))
def test_env_action_finds(env: gym.Env, name: str) -> None:
    env.reset(seed=0)
    with pytest.raises(TypeError, match="an action of real numbers"):
        env.step(ACTION_FINDS[name])
    still_steps(env)


@pytest.mark.parametrize("name", sorted(OPTION_FINDS))
def test_env_reset_option_finds(env: gym.Env, name: str) -> None:
    env.reset(seed=0, options={"content": "chelsea"})
    before = env.unwrapped._content.copy()
    with pytest.raises((TypeError, ValueError), match="reset options"):
        env.reset(options=OPTION_FINDS[name])
    with pytest.raises(FileNotFoundError):
        env.reset(options={"content": "chelsea", "style": "/no/such/style.png"})
    np.testing.assert_array_equal(env.unwrapped._content, before)  # a refused reset changes nothing
    still_steps(env)


# ------------------------------------------------------------------------------------------------ the CLIs
def garbage() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=6), st.sampled_from(["-1", "0", "nan", "inf", "1e9", "", "--", "-x"]))


def value(valid: list[str], odd: list[str] = ()) -> st.SearchStrategy[str]:
    """A flag's value: one it takes (half the draws, so that whole runs happen too), an odd one, or garbage."""
    return st.one_of(st.sampled_from(valid), st.sampled_from([*valid, *odd]), garbage())


def flags(draw_values: dict[str, st.SearchStrategy]) -> st.SearchStrategy[list[str]]:
    """A command line: some of the flags, each with a drawn value (``None``: a flag without a value)."""

    @st.composite
    def command(draw) -> list[str]:
        argv: list[str] = []
        for flag in draw(st.lists(st.sampled_from(sorted(draw_values)), unique=True, max_size=4)):
            value = draw(draw_values[flag])
            argv += [flag] if value is None else [flag, value]
        return argv

    return command()


def tiny_image() -> Path:
    """``images/tiny.png`` (16 x 20) beside ``images/other.png``: a folder of two styles, apart from the outputs."""
    for name, seed in (("tiny.png", 0), ("other.png", 1)):
        path = IMAGES / name
        if not path.exists():
            IMAGES.mkdir(exist_ok=True)
            Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(path)
    return IMAGES / "tiny.png"


STYLIZE_FLAGS = {
    "--model": value(["rlministyler", "rlnst:fire"], ["rlnst:nope", "/no/model.zip", str(FOLDER / "tiny.png")]),
    "--style": value(["starry_night", str(IMAGES / "tiny.png")], [str(IMAGES), "/no/style.png"]),
    "--steps": value(["1", "2"], ["0", "-2", "1001"]),
    "--device": value(["cpu", "auto"], ["cuda", "cuda:7", "mps", "meta", "xpu"]),
    "--max-side": value(["16", "64"], ["4", "0", "-1"]),
    "--style-size": value(["content", "none", "16"], ["0", "4", "99999"]),
    "--backend": value(["auto", "torch", "onnx"]),
    "--max-pixels": value(["1000000"], ["100", "0", "-1"]),
    "--sample": st.none(),
    "--half": st.none(),
}


def run_cli(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0, or SystemExit(2) whose stderr ends in one line (argparse's usage text, or ``error: ...``); the
    outputs are removed afterwards."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        partial = list(FOLDER.rglob(".*.partial-*"))
        for outputs in ("stylized", "runs"):
            shutil.rmtree(FOLDER / outputs, ignore_errors=True)
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and not partial, (argv, code, err, partial)
    if code == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("error:") or ": error: " in last, (argv, err)


@both((CLI_SHORT, CLI_LONG), argv=flags(STYLIZE_FLAGS))
def check_stylize_flags(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    run_cli(stylize.main, ["--content", str(tiny_image()), "--out", str(FOLDER / "stylized"), *argv], capsys)


test_stylize_flags, test_stylize_flags_long = check_stylize_flags


TRAIN_FLAGS = {
    "--policy": value(["MiniStylerPolicy", "RLNSTPolicy"], ["SACPolicy"]),
    "--image-size": value(["16", "24"], ["8", "4097"]),
    "--style": value(["starry_night", str(IMAGES / "tiny.png")], ["/no/style.png"]),
    "--n-envs": value(["1"], ["0", "257"]),
    "--seed": value(["0", "3"], ["-1", "4294967296"]),
    "--device": value(["cpu"], ["cuda", "meta"]),
    "--save-freq": value(["0", "1"], ["-1"]),
    "--max-minutes": value(["0.5"], ["0", "-1", "nan", "inf"]),
    "--hyperparams": value(["batch_size:2", "gamma:0.9"], ["buffer_size:0", "nope:1", "gamma:x"]),
    "--init": value(["rlministyler", "rlnst:fire"], ["nope"]),
    "-v": value(["0", "1"], ["-1", "3"]),
}


@both((CLI_SHORT, CLI_LONG), argv=flags(TRAIN_FLAGS))
def check_train_flags(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    # the run's closing picture (3 pairs x 10 steps at 256 px) is most of a tiny run's time: 1 step at 32 px
    picture = functools.partial(experiment.save_sequence_picture, steps=1, side=32)
    monkeypatch.setattr(experiment, "save_sequence_picture", picture)
    base = ["-n", "2", "--image-size", "16", "-f", str(FOLDER / "runs"), "--no-progress", "--eval-freq", "0"]
    base += ["--hyperparams", "learning_starts:1", "batch_size:1", "buffer_size:4"]
    run_cli(train_sac.main, [*base, *argv], capsys)


test_train_flags, test_train_flags_long = check_train_flags


#: Command lines the fuzzing found ending in a traceback, kept as regression cases.
CLI_FINDS = [
    (stylize.main, ["--device", "meta", "--backend", "torch", "--style", "starry_night", "--steps", "1"]),
    (train_sac.main, ["--device", "meta", "-n", "1"]),
    (stylize.main, ["--style", ""]),  # was the current folder: every image below it, a pair each
]


@pytest.mark.parametrize("main, argv", CLI_FINDS)
def test_cli_finds_end_in_one_line(main: Callable, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--content", str(tiny_image()), "--out", str(FOLDER / "stylized")] if main is stylize.main else []
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *argv])
    assert exit_info.value.code == 2 and "Traceback" not in capsys.readouterr().err
