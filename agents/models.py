"""Finding a policy by name or path: released weights (``rlministyler``) or a saved StyleSAC zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from agents.style_sac import MiniStylerPolicy, StyleSAC
from nst_env.style_transfer import resolve_device

#: Names of the released models shipped with the package.
RELEASED = ("rlministyler",)


class ModelLoadError(ValueError):
    """A model that is missing, corrupt, or not an actor-builder policy."""


def image_spaces(size: int = 256) -> tuple[spaces.Dict, spaces.Box]:
    """Observation and action spaces of ``NST-v0`` at ``size`` px (a policy built without an env)."""
    image = spaces.Box(0, 255, (3, size, size), np.uint8)
    return spaces.Dict({"moving": image, "style": image}), spaces.Box(0.0, 1.0, (3, size, size), np.float32)


def released_policy(name: str = "rlministyler", device: torch.device | str = "auto") -> MiniStylerPolicy:
    """A :class:`MiniStylerPolicy` holding the authors' released actor + builder (MIT licence)."""
    from agents.networks.pretrained import load_ministyler_pretrained

    if name not in RELEASED:
        raise ModelLoadError(f"Unknown released model {name!r}; expected one of {RELEASED}.")
    policy = MiniStylerPolicy(*image_spaces(), lr_schedule=lambda _: 0.0)  # inference only: no training
    load_ministyler_pretrained(policy.actor, policy.builder)
    return policy.to(resolve_device(device))


def load_policy(model: str | Path | None = None, device: torch.device | str = "auto") -> MiniStylerPolicy:
    """The policy of a released model name (default ``rlministyler``) or of a ``StyleSAC.save`` zip.

    :raises ModelLoadError: a missing, corrupt or incompatible model file (the message says which).
    """
    if model is None or str(model) in RELEASED:
        return released_policy(str(model or "rlministyler"), device)
    path = Path(model)
    if not path.is_file() and path.with_suffix(".zip").is_file():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise ModelLoadError(f"Model not found: {path} (expected a StyleSAC .zip or one of {RELEASED}).")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a StyleSAC model: not a zip archive (corrupt or wrong file).")
    try:
        algo = StyleSAC.load(path, device=resolve_device(device), buffer_size=1)
    except Exception as exc:  # noqa: BLE001 - SB3 raises many kinds for broken archives
        raise ModelLoadError(f"Could not load {path} as a StyleSAC model: {type(exc).__name__}: {exc}") from exc
    return algo.policy
