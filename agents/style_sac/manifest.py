"""The model manifest ``rl_nst.json``: what a policy is, written as plain JSON beside its weights.

:meth:`StyleSAC.save <agents.style_sac.StyleSAC.save>` writes it into every model zip and
``python -m agents.export_weights --format safetensors`` into the safetensors header, so that
:func:`agents.inference.models.load_policy` can rebuild the policy without unpickling anything: the policy
class by name (one of :data:`POLICY_CLASS_NAMES`), its constructor arguments (JSON values only) and its
observation and action spaces. Stable-Baselines3's own ``data`` entry pickles those three (cloudpickle), and
its readable copies are ``repr`` strings, not a format; the manifest is the declared one.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

#: Name of the manifest inside a model zip (and its key in a safetensors header's metadata).
MANIFEST_NAME = "rl_nst.json"
#: What ``format`` says in every manifest.
MANIFEST_FORMAT = "rl-nst policy"
#: The manifest layout's version (a reader refuses newer ones).
MANIFEST_VERSION = 1
#: The policy classes a manifest may name: the package builds them from their names alone.
POLICY_CLASS_NAMES = ("MiniStylerPolicy", "RLNSTPolicy", "RLNSTVideoPolicy")
#: Constructor arguments that only matter for training and hold Python objects (not written, not read).
TRAINING_ONLY_ARGUMENTS = ("optimizer_class", "optimizer_kwargs")
#: Constructor arguments given separately (the spaces) or rebuilt (the learning-rate schedule).
SEPARATE_ARGUMENTS = ("observation_space", "action_space", "lr_schedule")
#: Most elements one space of a manifest may hold (a ``3 x 2048 x 2048`` image; a bigger one is refused
#: before any array is allocated).
MAX_SPACE_ELEMENTS = 3 * 2048 * 2048
#: Box dtypes a manifest may name.
BOX_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
#: Most keys of a ``Dict`` space in a manifest.
MAX_DICT_KEYS = 16


def _bound(values: np.ndarray) -> float | int | bool | list:
    """A Box bound as JSON: one number when every element is the same, else nested lists."""
    flat = values.reshape(-1)
    if flat.size and bool(np.all(flat == flat[0])):
        return flat[0].item()
    return values.tolist()


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """``space`` as a JSON-ready dict (``Dict`` of ``Box`` and ``Discrete``, or one of those).

    :param space: the space to describe.
    :raises TypeError: a kind of space the manifest does not describe.
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(value) for key, value in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": _bound(space.low),
            "high": _bound(space.high),
            "shape": list(space.shape),
            "dtype": space.dtype.name,
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"The model manifest describes Dict, Box and Discrete spaces, not {type(space).__name__}.")


def _integer(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{what} must be an integer {bounds}, got {value!r}.")
    return value


def _box_bound(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray | float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value):
            raise ValueError(f"{what} is NaN.")
        return float(value)
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a number or nested lists of numbers, got {type(value).__name__}.")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold numbers only ({exc}).") from None
    if array.shape != shape or np.isnan(array).any():
        raise ValueError(f"{what} must have the space's shape {shape} and no NaN, got shape {array.shape}.")
    return array


def space_from_json(spec: Any, what: str = "space", nested: bool = False) -> spaces.Space:
    """The space a manifest describes, checked field by field (no other kind of value is built).

    :param spec: the JSON value (:func:`space_to_json`'s output).
    :param what: how to name it in errors.
    :param nested: whether ``spec`` sits inside a ``Dict`` (which then may not hold another ``Dict``).
    :raises ValueError: a description that is not one of a Box, Discrete or Dict of those, or too large.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{what} must be an object with a 'type', got {type(spec).__name__}.")
    kind = spec["type"]
    if kind == "Dict" and not nested:
        entries = spec.get("spaces")
        if not isinstance(entries, Mapping) or not 1 <= len(entries) <= MAX_DICT_KEYS:
            raise ValueError(f"{what}: a Dict space needs 1 to {MAX_DICT_KEYS} entries under 'spaces'.")
        return spaces.Dict(
            {str(key): space_from_json(value, f"{what}[{key!r}]", nested=True) for key, value in entries.items()}
        )
    if kind == "Box":
        shape = spec.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
            raise ValueError(f"{what}: a Box needs a 'shape' of 1 to 4 integers, got {shape!r}.")
        shape = tuple(_integer(side, f"{what} shape", 1, MAX_SPACE_ELEMENTS) for side in shape)
        if math.prod(shape) > MAX_SPACE_ELEMENTS:
            raise ValueError(f"{what}: shape {shape} holds more than {MAX_SPACE_ELEMENTS} elements.")
        dtype = spec.get("dtype")
        if dtype not in BOX_DTYPES:
            raise ValueError(f"{what}: dtype must be one of {BOX_DTYPES}, got {dtype!r}.")
        low = _box_bound(spec.get("low"), shape, f"{what} low")
        high = _box_bound(spec.get("high"), shape, f"{what} high")
        return spaces.Box(low=low, high=high, shape=shape, dtype=np.dtype(dtype))
    if kind == "Discrete":
        n = _integer(spec.get("n"), f"{what} n", 1, 2**31)
        start = _integer(spec.get("start", 0), f"{what} start", -(2**31), 2**31)
        return spaces.Discrete(n, start=start)
    raise ValueError(f"{what}: type must be Box, Discrete or (at the top) Dict, got {kind!r}.")


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return False
    return True


def policy_manifest(policy: Any, num_timesteps: int | None = None) -> dict[str, Any]:
    """The manifest of an actor-builder policy (:class:`~agents.style_sac.ActorBuilderPolicy`).

    The constructor arguments are the policy's own (``_get_constructor_parameters``) less the spaces, the
    schedule and the optimizer's class and arguments (training only); any other argument that is not a JSON
    value is listed under ``unsaved_arguments``, and a reader refuses such a manifest.

    :param policy: the policy to describe.
    :param num_timesteps: the environment steps it was trained for (informative).
    """
    arguments: dict[str, Any] = {}
    unsaved = []
    for key, value in policy._get_constructor_parameters().items():
        if key in SEPARATE_ARGUMENTS or key in TRAINING_ONLY_ARGUMENTS:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if _is_json(value):
            arguments[key] = value
        else:
            unsaved.append(key)
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "policy_class": type(policy).__name__,
        "policy_kwargs": arguments,
        "unsaved_arguments": unsaved,
        "observation_space": space_to_json(policy.observation_space),
        "action_space": space_to_json(policy.action_space),
        "num_timesteps": num_timesteps,
    }


def manifest_json(policy: Any, num_timesteps: int | None = None) -> str:
    """:func:`policy_manifest` as JSON text.

    :param policy: the policy to describe.
    :param num_timesteps: the environment steps it was trained for.
    """
    return json.dumps(policy_manifest(policy, num_timesteps), indent=2)


def write_with_manifest(archive: io.BytesIO, manifest: str, path: str | os.PathLike | io.BufferedIOBase) -> None:
    """Add the manifest to a Stable-Baselines3 zip held in memory and write the zip to ``path``.

    :param archive: the zip Stable-Baselines3 saved.
    :param manifest: :func:`manifest_json` of the model's policy.
    :param path: the file (``.zip`` is added to a name without a suffix, as Stable-Baselines3 does) or a writable
        binary file object.
    """
    with zipfile.ZipFile(archive, mode="a") as opened:
        opened.writestr(MANIFEST_NAME, manifest)
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if path.suffix == "":
            path = path.with_name(f"{path.name}.zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(archive.getvalue())
    else:
        path.write(archive.getvalue())
