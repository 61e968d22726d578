"""Finding a policy by name or path: released weights, a saved StyleSAC zip or a safetensors file.

Model files are read without unpickling (:mod:`agents.inference.model_files`): a zip that could only be
loaded by unpickling is refused, unless the caller passes ``allow_pickle=True`` for a file it trusts.

Shipped models (in ``agents/pretrained``): the papers' authors' weights ``rlministyler`` (RLMiniStyler, any
style; Hu et al., IJCAI 2025) and ``rlnst:blue_swirls``, ``rlnst:fire``, ``rlnst:maxresdefault`` (RL-NST, one
style each; Feng et al., 2023); and ours, ``rlministyler_ft128`` (RLMiniStyler fine-tuned by StyleSAC; its
folder's README.md says how and how it compares).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from agents.errors import ModelLoadError, UnsafeModelError
from agents.inference.model_files import load_safetensors_policy, load_zip_policy
from agents.networks.pretrained import MINISTYLER_MODELS, RLNST_PREFIX, RLNST_STYLES, rlnst_style_image_path
from agents.style_sac import ActorBuilderPolicy, MiniStylerPolicy, RLNSTPolicy, StyleSAC
from nst_env.utils import resolve_device

#: The one default model (``agents.stylize``, :func:`load_policy` without a name): ours, fine-tuned from the
#: authors' (``agents/pretrained/rlministyler_ft128/README.md``).
DEFAULT_MODEL = "rlministyler_ft128"
#: Names of the models shipped with the package.
RELEASED = (*MINISTYLER_MODELS, *(RLNST_PREFIX + style for style in RLNST_STYLES))


def image_spaces(size: int = 256, keys: tuple[str, ...] = ("moving", "style")) -> tuple[spaces.Dict, spaces.Box]:
    """Observation and action spaces of ``NST-v0`` at ``size`` px (a policy built without an env).

    :param size: image side in pixels.
    :param keys: the observation's image keys (a policy's ``required_keys``).
    """
    image = spaces.Box(0, 255, (3, size, size), np.uint8)
    return spaces.Dict({key: image for key in keys}), spaces.Box(0.0, 1.0, (3, size, size), np.float32)


def released_policy(name: str = "rlministyler", device: torch.device | str = "auto") -> ActorBuilderPolicy:
    """A policy holding released actor + builder weights (the authors', MIT licence).

    :param name: one of :data:`RELEASED`: ``"rlministyler"`` (a :class:`MiniStylerPolicy`) or
        ``"rlnst:<style>"`` (an :class:`RLNSTPolicy`).
    :param device: where the policy lives (``"auto"``: CUDA when available).
    :raises ModelLoadError: for an unknown name.
    """
    if name not in RELEASED:
        raise ModelLoadError(f"Unknown released model {name!r}; expected one of {RELEASED}.")
    policy_class = RLNSTPolicy if name.startswith(RLNST_PREFIX) else MiniStylerPolicy
    policy = policy_class(*image_spaces(keys=policy_class.required_keys), lr_schedule=lambda _: 0.0)  # inference only
    policy.load_released(name)
    return policy.to(resolve_device(device))


def released_style_image(name: str) -> Path | None:
    """The style image a released single-style model was trained on (``None``: not published, or not a
    single-style model).

    :param name: a released model's name, e.g. ``"rlnst:blue_swirls"``.
    """
    if not name.startswith(RLNST_PREFIX):
        return None
    return rlnst_style_image_path(name.removeprefix(RLNST_PREFIX))


def load_policy(
    model: str | Path | None = None, device: torch.device | str = "auto", allow_pickle: bool = False
) -> ActorBuilderPolicy:
    """The policy of a released model name (default :data:`DEFAULT_MODEL`), of a ``StyleSAC.save`` zip or of
    a safetensors file (``python -m agents.export_weights --format safetensors``), read without unpickling.

    :param model: one of :data:`RELEASED`, or the path of a saved StyleSAC model (``.zip`` optional) or of a
        ``.safetensors`` policy.
    :param device: where the policy lives (``"auto"``: CUDA when available).
    :param allow_pickle: for a zip that could only be loaded by unpickling, load it with ``StyleSAC.load``
        (which unpickles, running any code the file carries) instead of refusing it: only for files you
        trust (``python -m agents.export_weights --allow-pickle`` converts them).
    :raises UnsafeModelError: a zip that would need unpickling, without ``allow_pickle`` (the message says
        how to convert a trusted one).
    :raises ModelLoadError: a missing, corrupt or incompatible model file (the message says which).
    """
    if model is None or str(model) in RELEASED:
        return released_policy(str(model or DEFAULT_MODEL), device)
    path = Path(model)
    if not path.is_file() and path.with_suffix(".zip").is_file():
        path = path.with_suffix(".zip")
    if not path.is_file():
        raise ModelLoadError(
            f"Model not found: {path} (expected a StyleSAC .zip, a .safetensors policy or one of {RELEASED})."
        )
    if path.suffix.lower() == ".safetensors":
        return load_safetensors_policy(path, device)
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a StyleSAC model: not a zip archive (corrupt or wrong file).")
    try:
        return load_zip_policy(path, device)
    except UnsafeModelError:
        if not allow_pickle:
            raise
    try:
        algo = StyleSAC.load(path, device=resolve_device(device), buffer_size=1, verbose=0)
    except Exception as exc:
        raise ModelLoadError(f"Could not load {path} as a StyleSAC model: {type(exc).__name__}: {exc}") from exc
    return algo.policy
