"""Loading the papers' released weights, shipped inside the package under ``agents/pretrained``.

- ``rlministyler/actor.pth.tar``, ``builder.pth.tar``: RLMiniStyler (Hu et al., IJCAI 2025, "Light-weight RL
  Style Agent for Arbitrary Sequential Neural Style Generation"), arbitrary style.
- ``rlnst/<style>/actor.ckpt``, ``decoder.ckpt`` (and ``style.jpg`` where published): RL-NST (Feng et al.,
  2023, "Controlling Neural Style Transfer with Deep Reinforcement Learning"), one model per style.

Both sets are the authors' MIT-licensed files (the ``LICENSE`` beside each). They are plain state dicts saved
with the authors' module names; the ``*_KEY_MAP`` tables below rename their modules onto ours, after which the
state dict is loaded with ``strict=True``. Checkpoints saved from our own modules load as well (keys not in a
table are kept as they are).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

#: Folder of the released weights inside the installed package.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
#: Folder of RLMiniStyler's released actor and builder.
MINISTYLER_DIR = PRETRAINED_DIR / "rlministyler"
#: Shipped RLMiniStyler weights by name: the authors' release and ours, fine-tuned from it (each folder's
#: README.md says how it was made and how it compares).
MINISTYLER_MODELS: dict[str, Path] = {
    "rlministyler": MINISTYLER_DIR,
    "rlministyler_ft128": PRETRAINED_DIR / "rlministyler_ft128",
}
#: Folder holding one sub-folder per released RL-NST style.
RLNST_DIR = PRETRAINED_DIR / "rlnst"
#: Styles of the released RL-NST models (no style image was published for ``fire``).
RLNST_STYLES: tuple[str, ...] = ("blue_swirls", "fire", "maxresdefault")
#: Prefix of the released RL-NST models' names (``"rlnst:blue_swirls"``).
RLNST_PREFIX = "rlnst:"

#: The authors' module names -> ours, for RLMiniStyler's actor (:class:`~agents.networks.MiniStylerActor`).
MINISTYLER_ACTOR_KEY_MAP: dict[str, str] = {
    "encoder.enc1_1.0.conv_layer": "encoder.stem",
    "encoder.enc1_2.0.conv_layer": "encoder.down1.spatial",
    "encoder.enc1_2.2.conv_layer": "encoder.down1.pointwise",
    "encoder.style1_2.0.conv_layer": "encoder.style_refine1",
    "encoder.modulator1_2.weight1.0.conv_layer": "encoder.style_modulation1.weight_head",
    "encoder.modulator1_2.bias1.0.conv_layer": "encoder.style_modulation1.bias_head",
    "encoder.enc1_3.0.conv_layer": "encoder.down2.spatial",
    "encoder.enc1_3.2.conv_layer": "encoder.down2.pointwise",
    "encoder.style1_3.0.conv_layer": "encoder.style_refine2",
    "encoder.modulator1_3.weight1.0.conv_layer": "encoder.style_modulation2.weight_head",
    "encoder.modulator1_3.bias1.0.conv_layer": "encoder.style_modulation2.bias_head",
    "encoder.enc1_4.0.conv1.conv_layer": "encoder.res1.conv1",
    "encoder.enc1_4.0.conv2.conv_layer": "encoder.res1.conv2",
    "encoder.enc2.0.conv1.conv_layer": "encoder.res2.conv1",
    "encoder.enc2.0.conv2.conv_layer": "encoder.res2.conv2",
    "modulator.weight1.0.conv_layer": "feature_modulation1.weight_head",
    "modulator.bias1.0.conv_layer": "feature_modulation1.bias_head",
    "modulator.weight2.0.conv_layer": "feature_modulation2.weight_head",
    "modulator.bias2.0.conv_layer": "feature_modulation2.bias_head",
    "dist_builder.conv_layer.conv_layer": "policy_conv",
    "dist_builder.mean.conv_layer": "mean_head",
    "dist_builder.std.conv_layer": "log_scale_head",
}
#: The authors' module names -> ours, for RLMiniStyler's builder (:class:`.MiniStylerBuilder`).
MINISTYLER_BUILDER_KEY_MAP: dict[str, str] = {
    "dec1.conv1.conv_layer": "deep_block.conv1",
    "dec1.conv2.conv_layer": "deep_block.conv2",
    "dec2.conv1.conv_layer": "shallow_block.conv1",
    "dec2.conv2.conv_layer": "shallow_block.conv2",
    "dec3.conv1.conv_layer": "up1.conv",
    "dec3.conv2.conv_layer": "up1.pointwise",
    "dec4.conv1.conv_layer": "up2.conv",
    "dec4.conv2.conv_layer": "up2.pointwise",
    "dec5.0.conv_layer": "out_conv",
}
#: The authors' module names -> ours, for RL-NST's actor (:class:`~agents.networks.RLNSTActor`).
RLNST_ACTOR_KEY_MAP: dict[str, str] = {
    "conv1.conv2d": "conv1.conv",
    "in1_e": "conv1.norm",
    "conv2.conv2d": "conv2.conv",
    "in2_e": "conv2.norm",
    "conv3.conv2d": "conv3.conv",
    "in3_e": "conv3.norm",
    "res1.conv1.conv2d": "res.block1.conv",
    "res1.in1": "res.block1.norm",
    "res1.conv2.conv2d": "res.block2.conv",
    "res1.in2": "res.block2.norm",
}
#: The authors' module names -> ours, for RL-NST's builder (:class:`~agents.networks.RLNSTBuilder`).
RLNST_BUILDER_KEY_MAP: dict[str, str] = {
    "deconv3.conv2d": "up3.conv",
    "in3_d": "up3.norm",
    "deconv2.conv2d": "up2.conv",
    "in2_d": "up2.norm",
    "deconv1.conv2d": "out_conv",
    "in1_d": "out_norm",
}


def rename_keys(state_dict: Mapping[str, torch.Tensor], key_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename ``<module>.<parameter>`` keys whose module is in ``key_map``; other keys are kept.

    :param state_dict: a state dict.
    :param key_map: module path in the checkpoint -> module path in our network.
    """
    renamed = {}
    for key, value in state_dict.items():
        module, _, name = key.rpartition(".")
        renamed[f"{key_map[module]}.{name}" if module in key_map else key] = value
    return renamed


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (on the CPU, ``weights_only=True``).

    :param path: checkpoint file.
    :raises FileNotFoundError: if there is no such file.
    :raises ValueError: if the file cannot be unpickled (corrupt, truncated) or is not a ``str -> Tensor``
        mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load reports a damaged file with many exception types
        raise ValueError(
            f"cannot read checkpoint {path}: expected a state dict saved with torch.save, the file may be "
            f"corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"checkpoint {path} is not a state dict (a mapping of names to tensors): {type(state).__name__}"
        )
    return dict(state)


def load_checkpoint(module: nn.Module, path: str | os.PathLike, key_map: Mapping[str, str]) -> None:
    """Load a checkpoint into ``module`` (strictly), renaming the authors' keys with ``key_map``.

    The parameters keep their device and dtype (values are copied into them).

    :param module: the network to fill.
    :param path: checkpoint file.
    :param key_map: see :func:`rename_keys`.
    :raises FileNotFoundError: if there is no such file.
    :raises ValueError: if the file is unreadable or its keys or shapes do not match ``module``.
    """
    state = rename_keys(read_state_dict(path), key_map)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shapes = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shapes:
        found = {"missing keys": missing, "unexpected keys": unexpected, "wrong shapes": wrong_shapes}
        problems = [f"{label}: {', '.join(items)}" for label, items in found.items() if items]
        raise ValueError(
            f"checkpoint {path} does not fit {type(module).__name__} (expected {len(expected)} tensors, "
            f"{sum(v.numel() for v in expected.values()):,} values); " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)


def load_ministyler_pretrained(
    actor: nn.Module, builder: nn.Module, directory: str | os.PathLike | None = None
) -> None:
    """Load RLMiniStyler's released weights (or a folder of the same layout) into an actor and a builder.

    :param actor: a :class:`~agents.networks.MiniStylerActor`.
    :param builder: a :class:`~agents.networks.MiniStylerBuilder`.
    :param directory: a name of :data:`MINISTYLER_MODELS`, or a folder holding ``actor.pth.tar`` and
        ``builder.pth.tar`` (the authors' module names or ours); ``None``: the authors' release.
    :raises FileNotFoundError: if a file is missing.
    :raises ValueError: if a file is unreadable or does not fit the network.
    """
    named = MINISTYLER_MODELS.get(str(directory or "rlministyler"))
    folder = named if named is not None else Path(directory)  # type: ignore[arg-type]
    load_checkpoint(actor, folder / "actor.pth.tar", MINISTYLER_ACTOR_KEY_MAP)
    load_checkpoint(builder, folder / "builder.pth.tar", MINISTYLER_BUILDER_KEY_MAP)


def save_ministyler_weights(actor: nn.Module, builder: nn.Module, directory: str | os.PathLike) -> Path:
    """Write an actor and a builder as ``actor.pth.tar`` and ``builder.pth.tar`` (float32 state dicts on the
    CPU, our module names), the layout :func:`load_ministyler_pretrained` reads; each file atomically.

    :param actor: a :class:`~agents.networks.MiniStylerActor`.
    :param builder: a :class:`~agents.networks.MiniStylerBuilder`.
    :param directory: the folder to write (created).
    """
    from agents.files import atomic_path

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in (("actor", actor), ("builder", builder)):
        state = {key: value.detach().float().cpu() for key, value in module.state_dict().items()}
        with atomic_path(folder / f"{name}.pth.tar") as partial:
            torch.save(state, partial)
    return folder


def _rlnst_folder(name_or_dir: str | os.PathLike) -> Path:
    if str(name_or_dir) in RLNST_STYLES:
        return RLNST_DIR / str(name_or_dir)
    folder = Path(name_or_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no RL-NST model {str(name_or_dir)!r}: not one of the released styles {RLNST_STYLES} "
            "and not a folder holding actor.ckpt and decoder.ckpt"
        )
    return folder


def load_rlnst_pretrained(actor: nn.Module, builder: nn.Module, name_or_dir: str | os.PathLike) -> None:
    """Load a released RL-NST single-style model (or a folder of the same layout).

    :param actor: an :class:`~agents.networks.RLNSTActor`.
    :param builder: an :class:`~agents.networks.RLNSTBuilder`.
    :param name_or_dir: one of :data:`RLNST_STYLES`, or a folder holding ``actor.ckpt`` and ``decoder.ckpt``.
    :raises FileNotFoundError: if the model or one of its files does not exist.
    :raises ValueError: if a file is unreadable or does not fit the network.
    """
    folder = _rlnst_folder(name_or_dir)
    load_checkpoint(actor, folder / "actor.ckpt", RLNST_ACTOR_KEY_MAP)
    load_checkpoint(builder, folder / "decoder.ckpt", RLNST_BUILDER_KEY_MAP)


def rlnst_style_image_path(name: str) -> Path | None:
    """The style image a released RL-NST model was trained on, or ``None`` where none was published.

    :param name: one of :data:`RLNST_STYLES`.
    :raises ValueError: for an unknown style name.
    """
    if name not in RLNST_STYLES:
        raise ValueError(f"unknown RL-NST style {name!r}; released styles: {RLNST_STYLES}")
    path = RLNST_DIR / name / "style.jpg"
    return path if path.is_file() else None


__all__ = [
    "MINISTYLER_ACTOR_KEY_MAP",
    "MINISTYLER_BUILDER_KEY_MAP",
    "MINISTYLER_DIR",
    "MINISTYLER_MODELS",
    "save_ministyler_weights",
    "PRETRAINED_DIR",
    "RLNST_ACTOR_KEY_MAP",
    "RLNST_DIR",
    "RLNST_PREFIX",
    "RLNST_STYLES",
    "RLNST_BUILDER_KEY_MAP",
    "load_checkpoint",
    "load_ministyler_pretrained",
    "load_rlnst_pretrained",
    "read_state_dict",
    "rename_keys",
    "rlnst_style_image_path",
]
