"""Reading images of every kind, folders of them, and what the env makes of odd, tiny, huge and broken files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_env import NSTEnv, load_image
from nst_env.images import ImagePool, ImageReadError, resize, scan_folder

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SIZE = 32


@pytest.mark.parametrize(
    "name",
    [
        "rgb",
        "gray",
        "gray_alpha",
        "rgba",
        "palette",
        "palette_transparent",
        "cmyk",
        "bmp",
        "gray16",
        "gray16_large",
        "tiny",
        "one_pixel",
    ],
)
def test_every_readable_kind_becomes_uint8_rgb(odd_images: dict[str, Path], name: str) -> None:
    with Image.open(odd_images[name]) as img:
        width, height = img.size
    image = load_image(odd_images[name])
    assert image.dtype == np.uint8 and image.shape == (height, width, 3) and image.flags.c_contiguous
    bounded = load_image(odd_images[name], max_side=20)
    assert bounded.dtype == np.uint8 and bounded.ndim == 3 and bounded.shape[2] == 3
    assert max(bounded.shape[:2]) == min(20, max(height, width))


def test_pixel_values_of_the_odd_modes(odd_images: dict[str, Path]) -> None:
    rgb = np.asarray(Image.open(odd_images["bmp"]).convert("RGB"))  # the source pixels, lossless
    gray = load_image(odd_images["gray"])
    np.testing.assert_array_equal(gray, np.repeat(rgb[..., :1], 3, axis=2))  # L -> equal channels
    rgba = load_image(odd_images["rgba"])
    assert (rgba[:, :25] == 255).all()  # transparent -> white
    np.testing.assert_array_equal(rgba[:, 25:], rgb[:, 25:])  # opaque -> unchanged
    palette = load_image(odd_images["palette"])
    np.testing.assert_array_equal(palette, np.asarray(Image.open(odd_images["palette"]).convert("RGB")))
    assert len(np.unique(palette.reshape(-1, 3), axis=0)) <= 16
    gray16 = load_image(odd_images["gray16"])  # 0..65535 ramp -> 0..255 ramp
    assert gray16[0, 0, 0] == 0 and gray16[0, -1, 0] == 255
    assert (np.diff(gray16[0, :, 0].astype(int)) >= 0).all() and (gray16[..., 0] == gray16[..., 2]).all()
    large16 = load_image(odd_images["gray16_large"], max_side=64)  # shrunk through 8 bits, range kept
    assert large16.shape == (55, 64, 3) and large16[:, :2].max() < 8 and large16[:, -2:].min() > 247
    cmyk = load_image(odd_images["cmyk"])
    assert np.abs(cmyk.astype(int) - rgb).mean() < 20  # JPEG-lossy, but the same picture


def test_arrays_are_validated(odd_images: dict[str, Path]) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(rgb), rgb)
    np.testing.assert_array_equal(load_image(rgb[..., 0]), np.repeat(rgb[..., :1], 3, axis=2))
    rgba = np.dstack([rgb, np.zeros((6, 7), np.uint8)])
    np.testing.assert_array_equal(load_image(rgba), rgb)
    np.testing.assert_array_equal(load_image(rgb.astype(np.float32) / 255.0), rgb)  # floats in [0, 1]
    assert load_image(np.asfortranarray(rgb)).flags.c_contiguous
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((4,), np.uint8)):
        with pytest.raises(ImageReadError, match="H x W x 3"):
            load_image(bad)
    with pytest.raises(ImageReadError, match="dtype"):
        load_image(np.zeros((4, 4, 3), np.int64))
    with pytest.raises(ImageReadError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan, np.float32))


def test_unreadable_and_missing_files(odd_images: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(odd_images["broken"])
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_image(tmp_path / "nowhere.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(odd_images["rgba"].read_bytes()[:80])  # a valid header, then nothing
    with pytest.raises(ImageReadError, match="truncated.png"):
        load_image(truncated)


def test_resize_is_exact_in_size_and_keeps_flat_colours() -> None:
    flat = np.full((10, 30, 3), (10, 200, 30), np.uint8)
    for w, h in ((64, 64), (5, 3), (30, 10)):
        out = resize(flat, w, h)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
        assert (np.abs(out.astype(int) - (10, 200, 30)) <= 1).all()


def test_huge_jpeg_and_png(tmp_path: Path) -> None:
    """6000 x 6000 files decode bounded by max_side (JPEG at reduced size) and feed the env."""
    big = np.zeros((6000, 6000, 3), np.uint8)
    big[..., 0] = np.linspace(0, 255, 6000).astype(np.uint8)[None, :]  # red ramp left -> right
    big[..., 2] = 255 - big[..., 0]
    Image.fromarray(big).save(tmp_path / "huge.jpg", quality=90)
    Image.fromarray(big).save(tmp_path / "huge.png", compress_level=1)
    del big
    for name in ("huge.jpg", "huge.png"):
        image = load_image(tmp_path / name, max_side=4 * SIZE)
        assert image.shape == (4 * SIZE, 4 * SIZE, 3)
        assert image[:, :4, 0].mean() < 20 and image[:, -4:, 0].mean() > 235  # the picture, not noise
    env = NSTEnv(image_size=SIZE, content_dir=tmp_path, style_dir=tmp_path, device="cpu")
    obs, _ = env.reset(seed=0)
    assert obs["moving"].shape == obs["style"].shape == (3, SIZE, SIZE)
    obs, _ = env.reset(options={"content": tmp_path / "huge.png", "style": str(tmp_path / "huge.jpg")})
    assert obs["moving"][0, :, :2].mean() < 30 and obs["style"][0, :, -2:].mean() > 225


def test_scan_folder_is_recursive_and_skips_unreadable_files(image_folder: Path) -> None:
    with pytest.warns(UserWarning, match="Skipping unreadable image .*corrupt.png"):
        found = scan_folder(image_folder)
    assert [p.relative_to(image_folder).as_posix() for p in found] == ["a/b/three.PNG", "a/two.jpg", "one.png"]


def test_folders_without_usable_images_are_errors(tmp_path: Path, odd_images: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "broken.jpg").write_bytes(odd_images["broken"].read_bytes())
    (tmp_path / "junk" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="No usable image in .*empty"):
        NSTEnv(image_size=SIZE, content_dir=tmp_path / "empty", device="cpu")
    with pytest.warns(UserWarning, match="broken.jpg"), pytest.raises(ValueError, match="No usable image in .*junk"):
        NSTEnv(image_size=SIZE, style_dir=tmp_path / "junk", device="cpu")
    with pytest.raises(FileNotFoundError):
        NSTEnv(image_size=SIZE, content_dir=tmp_path / "missing", device="cpu")


def test_pool_drops_a_file_that_only_fails_on_decode(tmp_path: Path, odd_images: dict[str, Path]) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(odd_images["rgb"].read_bytes())
    (tmp_path / "bad.png").write_bytes(odd_images["rgba"].read_bytes()[:80])  # header fine, data truncated
    pool = ImagePool(tmp_path, max_side=64)
    assert len(pool) == 2  # the header scan keeps both
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="bad.png"):
        drawn = [pool.draw(rng) for _ in range(10)]
    assert len(pool) == 1 and all(d.shape == (40, 50, 3) for d in drawn)


def test_env_works_on_every_odd_image(odd_images: dict[str, Path], tmp_path: Path) -> None:
    """A folder of every odd kind plus a broken file: one warning naming it, then every image is usable."""
    for path in odd_images.values():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.warns(UserWarning, match="broken.jpg"):
        env = NSTEnv(image_size=SIZE, content_dir=tmp_path, style_dir=tmp_path, device="cpu")
    assert len(env.content_pool) == len(odd_images) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for index in range(len(env.content_pool)):  # each file as content, the next as style
            items = env.content_pool.items
            image, following = items[index], items[(index + 1) % len(items)]
            obs, _ = env.reset(seed=index, options={"content": image, "style": following})
            assert obs["moving"].shape == (3, SIZE, SIZE) and obs["moving"].dtype == np.uint8
            obs, reward, *_ = env.step(obs["moving"] / 255.0)
            assert np.isfinite(reward)
        for seed in range(5):  # and drawn with the training crop
            obs, _ = env.reset(seed=seed)
            assert obs["style"].shape == (3, SIZE, SIZE)


def test_tiny_images_are_upscaled(odd_images: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "tiny.png").write_bytes(odd_images["tiny"].read_bytes())
    env = NSTEnv(image_size=SIZE, content_dir=tmp_path, style=odd_images["one_pixel"], device="cpu")
    obs, _ = env.reset(seed=0)
    one_pixel = load_image(odd_images["one_pixel"])[0, 0]
    assert (obs["style"] == one_pixel[:, None, None]).all()  # a 1 x 1 image is a flat colour at any size
    obs, _ = env.reset(options={"content": odd_images["tiny"]})
    assert obs["moving"].shape == (3, SIZE, SIZE)
