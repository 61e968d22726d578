"""Networks of RLMiniStyler (Hu et al., IJCAI 2025) and RL-NST (Feng et al., 2023): sizes, shapes, the
authors' reference outputs, gradients and the loaders' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.networks import (
    PRETRAINED_DIR,
    RLNST_STYLES,
    MiniStylerActor,
    MiniStylerBuilder,
    MiniStylerCritic,
    RLNSTActor,
    RLNSTBuilder,
    adain,
    channel_mean_std,
    crop_to_size,
    denormalize_imagenet,
    load_ministyler_pretrained,
    load_rlnst_pretrained,
    normalize_imagenet,
    pad_to_multiple,
    rlnst_style_image_path,
)

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-4  # max abs difference relative to the max abs reference value (pretrained/README.md)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def relative_error(actual: torch.Tensor, reference: np.ndarray) -> float:
    expected = torch.from_numpy(reference)
    return ((actual.detach().cpu() - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def ministyler() -> tuple[MiniStylerActor, MiniStylerBuilder]:
    actor, builder = MiniStylerActor().eval(), MiniStylerBuilder().eval()
    load_ministyler_pretrained(actor, builder)
    return actor, builder


@pytest.fixture(scope="module")
def rlnst() -> tuple[RLNSTActor, RLNSTBuilder]:
    actor, builder = RLNSTActor().eval(), RLNSTBuilder().eval()
    load_rlnst_pretrained(actor, builder, "blue_swirls")
    return actor, builder


# ----------------------------------------------------------------------------------------------- sizes
def test_parameter_counts() -> None:
    assert n_params(MiniStylerActor()) == 217_312
    assert n_params(MiniStylerBuilder()) == 153_843
    assert n_params(RLNSTActor()) == 101_376
    assert n_params(RLNSTBuilder()) == 77_049
    assert abs(n_params(MiniStylerCritic()) - 166_000) / 166_000 < 0.03


def test_ministyler_odd_size_round_trip(ministyler: tuple[MiniStylerActor, MiniStylerBuilder]) -> None:
    actor, builder = ministyler
    torch.manual_seed(0)
    content, style = torch.rand(2, 3, 37, 53), torch.rand(2, 3, 29, 41)
    moving, size = pad_to_multiple(content, 4)
    assert moving.shape[-2:] == (40, 56) and size == (37, 53)
    with torch.no_grad():
        code = actor.encode_style(style)
        mean, log_scale = actor(moving, code)
        image = builder(actor.distribution(moving, code).sample(), code)
    assert mean.shape == log_scale.shape == (2, 64, 10, 14)
    assert log_scale.min() >= -10.0 and log_scale.max() <= 2.0
    assert image.shape == (2, 3, 40, 56)
    assert crop_to_size(image, size).shape == (2, 3, 37, 53)
    assert [rep.shape for rep in code.representations()] == [(2, 64), (2, 128), (2, 128), (2, 128), (2, 352)]


def test_rlnst_odd_size_round_trip(rlnst: tuple[RLNSTActor, RLNSTBuilder]) -> None:
    actor, builder = rlnst
    x, size = pad_to_multiple(normalize_imagenet(torch.rand(1, 3, 37, 53)), 4)
    with torch.no_grad():
        mean, std, skips = actor(x)
        image = crop_to_size(builder(mean + std * torch.randn_like(std), skips), size)
    assert mean.shape == std.shape == (1, 1, 10, 14)
    assert [s.shape[1:] for s in skips] == [(16, 40, 56), (32, 20, 28), (64, 10, 14)]
    assert (std > 0).all()
    assert image.shape == (1, 3, 37, 53)


def test_pad_to_multiple_edge_cases() -> None:
    x = torch.rand(1, 3, 8, 12)
    padded, size = pad_to_multiple(x, 4)
    assert padded is x and size == (8, 12)
    padded, size = pad_to_multiple(x[..., :5, :7], 4)
    assert padded.shape[-2:] == (8, 8) and torch.equal(padded[..., 5, :7], x[..., 3, :7])  # reflection
    tiny, size = pad_to_multiple(torch.rand(1, 3, 1, 2), 4)
    assert tiny.shape[-2:] == (4, 4) and size == (1, 2)


def test_channel_statistics_and_adain() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 7) * 3 + 1
    mean, std = channel_mean_std(x)
    flat = x.flatten(start_dim=2)
    assert mean.shape == std.shape == (2, 5, 1, 1)
    torch.testing.assert_close(std.view(2, 5), (flat.var(dim=2, unbiased=True) + 1e-5).sqrt())
    style = torch.randn(2, 5, 4, 9) * 0.5 - 2
    out_mean, out_std = channel_mean_std(adain(x, style))
    style_mean, style_std = channel_mean_std(style)
    torch.testing.assert_close(out_mean, style_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_std, style_std, atol=1e-4, rtol=1e-4)
    rgb = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(denormalize_imagenet(normalize_imagenet(rgb)), rgb)


# ------------------------------------------------------------------------------------- reference outputs
def test_ministyler_reproduces_reference(ministyler: tuple[MiniStylerActor, MiniStylerBuilder]) -> None:
    actor, builder = ministyler
    ref = np.load(DATA / "rlministyler_reference_io.npz")
    with torch.no_grad():
        code = actor.encode_style(torch.from_numpy(ref["style"]))
        mean, log_scale = actor(torch.from_numpy(ref["content"]), code)
        assert relative_error(mean, ref["action_mean"]) < TOLERANCE
        assert relative_error(log_scale.exp(), ref["action_scale"]) < TOLERANCE
        assert relative_error(builder(mean, code), ref["output_step1"]) < TOLERANCE
        moving, steps = torch.from_numpy(ref["content"]), []
        for _ in range(3):  # fed back unclamped, with the mean action
            moving = builder(actor(moving, code)[0], code)
            steps.append(moving)
    assert relative_error(torch.cat(steps), ref["sequence_3_steps"]) < TOLERANCE


def test_rlnst_reproduces_reference(rlnst: tuple[RLNSTActor, RLNSTBuilder]) -> None:
    actor, builder = rlnst
    ref = np.load(DATA / "rlnst_reference_io.npz")
    with torch.no_grad():
        mean, std, skips = actor(torch.from_numpy(ref["content_normalized"]))
        output = builder(mean, skips)
    assert relative_error(mean, ref["latent_mean"]) < TOLERANCE
    assert relative_error(std, ref["latent_std"]) < TOLERANCE
    assert relative_error(output, ref["output_step1"]) < TOLERANCE


def test_autocast_cpu_bfloat16(ministyler: tuple[MiniStylerActor, MiniStylerBuilder]) -> None:
    actor, builder = ministyler
    ref = np.load(DATA / "rlministyler_reference_io.npz")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        code = actor.encode_style(torch.from_numpy(ref["style"]))
        output = builder(actor(torch.from_numpy(ref["content"]), code)[0], code)
    assert torch.isfinite(output).all()
    assert relative_error(output.float(), ref["output_step1"]) < 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference() -> None:
    actor, builder = MiniStylerActor().cuda().eval(), MiniStylerBuilder().cuda().eval()
    load_ministyler_pretrained(actor, builder)
    ref = np.load(DATA / "rlministyler_reference_io.npz")
    content, style = (torch.from_numpy(ref[k]).cuda() for k in ("content", "style"))
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        code = actor.encode_style(style)
        assert relative_error(builder(actor(content, code)[0], code), ref["output_step1"]) < TOLERANCE
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        code = actor.encode_style(style)
        output = builder(actor(content, code)[0], code)
    assert relative_error(output.float(), ref["output_step1"]) < 0.05


# ------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_action_and_actor() -> None:
    torch.manual_seed(0)
    actor, builder = MiniStylerActor(), MiniStylerBuilder()
    moving, style = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 20, 16)
    code = actor.encode_style(style)
    action = actor.distribution(moving, code).rsample()
    action.retain_grad()
    builder(action, code).square().mean().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0
    trained = (actor.mean_head, actor.log_scale_head, actor.encoder.stem, actor.feature_modulation2)
    for module in (*trained, builder.out_conv):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), module


def test_critic_shape_and_negative_values() -> None:
    critic = MiniStylerCritic()
    moving, action = torch.rand(3, 3, 16, 24), torch.randn(3, 64, 4, 6)
    assert critic(moving, action).shape == (3, 1)
    with torch.no_grad():
        critic.out_conv.bias.fill_(-5.0)
    q = critic(moving, action)
    assert (q < 0).all()
    q.sum().backward()
    assert critic.stem.weight.grad is not None


# --------------------------------------------------------------------------------------------- loaders
def test_all_released_rlnst_models_load() -> None:
    for name in RLNST_STYLES:
        load_rlnst_pretrained(RLNSTActor(), RLNSTBuilder(), name)
    assert rlnst_style_image_path("fire") is None
    assert rlnst_style_image_path("blue_swirls") == PRETRAINED_DIR / "rlnst" / "blue_swirls" / "style.jpg"
    with pytest.raises(ValueError, match="unknown RL-NST style"):
        rlnst_style_image_path("starry_night")
    with pytest.raises(FileNotFoundError, match="starry_night"):
        load_rlnst_pretrained(RLNSTActor(), RLNSTBuilder(), "starry_night")


def test_own_state_dicts_round_trip(tmp_path: Path) -> None:
    actor, builder = MiniStylerActor(), MiniStylerBuilder()
    torch.save(actor.state_dict(), tmp_path / "actor.pth.tar")
    torch.save(builder.state_dict(), tmp_path / "builder.pth.tar")
    other_actor, other_builder = MiniStylerActor(), MiniStylerBuilder()
    load_ministyler_pretrained(other_actor, other_builder, tmp_path)
    assert torch.equal(other_actor.mean_head.weight, actor.mean_head.weight)


def test_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="actor.pth.tar"):
        load_ministyler_pretrained(MiniStylerActor(), MiniStylerBuilder(), tmp_path)
    torch.save(MiniStylerActor().state_dict(), tmp_path / "actor.pth.tar")
    with pytest.raises(FileNotFoundError, match="builder.pth.tar"):
        load_ministyler_pretrained(MiniStylerActor(), MiniStylerBuilder(), tmp_path)


def test_loader_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "actor.ckpt").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    with pytest.raises(ValueError, match="actor.ckpt"):
        load_rlnst_pretrained(RLNSTActor(), RLNSTBuilder(), tmp_path)
    released = (PRETRAINED_DIR / "rlministyler" / "actor.pth.tar").read_bytes()
    (tmp_path / "actor.pth.tar").write_bytes(released[: len(released) // 2])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_ministyler_pretrained(MiniStylerActor(), MiniStylerBuilder(), tmp_path)


def test_loader_incompatible_state_dict(tmp_path: Path) -> None:
    released = PRETRAINED_DIR / "rlnst" / "fire" / "actor.ckpt"
    state = torch.load(released, map_location="cpu", weights_only=True)
    state["conv1.conv2d.weight"] = torch.zeros(8, 3, 9, 9)
    torch.save(state, tmp_path / "actor.ckpt")
    with pytest.raises(ValueError, match=r"wrong shapes: conv1\.conv\.weight \(8, 3, 9, 9\)"):
        load_rlnst_pretrained(RLNSTActor(), RLNSTBuilder(), tmp_path)
    # The RL-NST builder's weights are not an RLMiniStyler actor.
    torch.save(RLNSTBuilder().state_dict(), tmp_path / "actor.pth.tar")
    with pytest.raises(ValueError, match="missing keys"):
        load_ministyler_pretrained(MiniStylerActor(), MiniStylerBuilder(), tmp_path)
