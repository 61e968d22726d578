"""Reading saved policies without unpickling: StyleSAC zips and safetensors files.

A Stable-Baselines3 zip keeps the algorithm's attributes in its ``data`` entry, some of them pickled with
cloudpickle, and unpickling runs whatever code the file carries. Here nothing is unpickled:

- the policy's class, constructor arguments and spaces come from the zip's manifest ``rl_nst.json``
  (:mod:`agents.style_sac.manifest`, written by :meth:`StyleSAC.save <agents.style_sac.StyleSAC.save>`); in a
  zip saved before the manifest existed, from the readable parts of ``data``: the class from the pickle's
  opcodes, read as data and accepted only when they merely name one of
  :data:`~agents.style_sac.manifest.POLICY_CLASS_NAMES`, the arguments from the plain ``policy_kwargs`` and
  the spaces from their ``repr``;
- the weights come from ``policy.pth`` with ``torch.load(..., weights_only=True)``, or from a safetensors
  file (``python -m agents.export_weights --format safetensors``), whose header holds the manifest.

A file that could only be loaded by unpickling is refused with :class:`~agents.errors.UnsafeModelError`,
whose message says how to convert a trusted one (:data:`CONVERT_COMMAND`). Every read is bounded in size.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from agents.errors import ModelLoadError, UnsafeModelError
from agents.files import atomic_path
from agents.style_sac import ActorBuilderPolicy, MiniStylerPolicy, RLNSTPolicy, RLNSTVideoPolicy
from agents.style_sac.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    POLICY_CLASS_NAMES,
    SEPARATE_ARGUMENTS,
    TRAINING_ONLY_ARGUMENTS,
    manifest_json,
    space_from_json,
)
from nst_env.utils import resolve_device

#: The policy classes a model file may name (:data:`~agents.style_sac.manifest.POLICY_CLASS_NAMES`).
POLICY_CLASSES: dict[str, type[ActorBuilderPolicy]] = {
    cls.__name__: cls for cls in (MiniStylerPolicy, RLNSTPolicy, RLNSTVideoPolicy)
}
assert tuple(POLICY_CLASSES) == POLICY_CLASS_NAMES
#: The zip entry holding the policy's state dict.
POLICY_WEIGHTS = "policy.pth"
#: Largest ``data`` or manifest entry read from a zip (decompressed bytes).
MAX_DATA_BYTES = 64 * 2**20
#: Largest ``policy.pth`` read from a zip (decompressed bytes).
MAX_WEIGHTS_BYTES = 2 * 2**30
#: Largest pickled class reference looked at (a reference is a few dozen bytes).
MAX_REFERENCE_BYTES = 4096
#: The command that converts a trusted model file into one that loads without unpickling.
CONVERT_COMMAND = "python -m agents.export_weights"
#: Pickle opcodes a class reference is made of (anything else builds objects or calls code).
REFERENCE_OPCODES = frozenset(
    {"PROTO", "FRAME", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "MEMOIZE", "STACK_GLOBAL", "GLOBAL", "STOP"}
)


def conversion_hint(path: str | os.PathLike) -> str:
    """The sentence that tells how to convert a trusted model file.

    :param path: the refused file.
    """
    out = Path(path).with_suffix(".safetensors")
    return (
        f"If you trust the file, convert it once on a trusted machine: {CONVERT_COMMAND} {path} --allow-pickle "
        f"--format safetensors --out {out}, then load {out}."
    )


def refuse(path: str | os.PathLike, what: str) -> UnsafeModelError:
    """The error for a model file that would need unpickling.

    :param path: the file.
    :param what: what would have to be unpickled (and why).
    """
    return UnsafeModelError(
        f"Refused {path}: loading it would unpickle {what}, and unpickling runs any code the file carries. "
        + conversion_hint(path)
    )


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """The bytes of one zip entry, refusing one that declares more than ``limit`` bytes.

    :param archive: the open zip.
    :param name: the entry.
    :param limit: the most decompressed bytes accepted (``zipfile`` never reads past the declared size).
    :raises ModelLoadError: a larger entry.
    """
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise ModelLoadError(f"its {name!r} entry declares {info.file_size} bytes, more than the {limit} accepted.")
    with archive.open(info) as member:
        return member.read(limit + 1)[:limit]


# ------------------------------------------------------------------------------ zips saved before the manifest
def pickled_class_reference(serialized: Any, path: str | os.PathLike) -> str:
    """The class a cloudpickle'd ``policy_class`` names, read from its opcodes without running them.

    An importable class is pickled as a reference: its module and name, then ``STACK_GLOBAL``. Any other
    opcode (building objects, calling functions: what a crafted file does) is refused.

    :param serialized: the entry's base64 ``:serialized:`` text.
    :param path: the model file (for the message).
    :return: the class name, one of :data:`POLICY_CLASSES`.
    :raises UnsafeModelError: anything but a reference to one of those classes.
    """
    what = "its policy_class entry"
    try:
        raw = base64.b64decode(str(serialized).encode(), validate=True)
    except (binascii.Error, ValueError):
        raise refuse(path, f"{what} (not base64)") from None
    if len(raw) > MAX_REFERENCE_BYTES:
        raise refuse(path, f"{what} ({len(raw)} bytes of pickle, not a reference to a class)")
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(raw):
            if opcode.name not in REFERENCE_OPCODES:
                raise refuse(path, f"{what} (its pickle runs {opcode.name}, more than naming a class)")
            if opcode.name == "GLOBAL":
                strings.extend(str(argument).split(" ", 1))
            elif isinstance(argument, str):
                strings.append(argument)
    except UnsafeModelError:
        raise
    except Exception as exc:  # pickletools reports a malformed stream with several exception types
        raise refuse(path, f"{what} (a malformed pickle: {exc})") from None
    if len(strings) != 2 or not strings[0].startswith("agents.") or strings[1] not in POLICY_CLASSES:
        named = ".".join(strings) or "nothing"
        raise refuse(path, f"{what}: it names {named}, not one of the package's policies {POLICY_CLASS_NAMES}")
    return strings[1]


_BOX = r"Box\((?P<low>[-+\w.]+), (?P<high>[-+\w.]+), \((?P<shape>\d+(?:, \d+)*),?\), (?P<dtype>\w+)\)"
_DISCRETE = r"Discrete\((?P<n>\d+)(?:, start=(?P<start>-?\d+))?\)"
_ENTRY = re.compile(rf"'(?P<key>\w+)': (?:{_BOX}|{_DISCRETE})")
_NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+\.?\d*(?:e[-+]?\d+)?)", re.IGNORECASE)


def _repr_space(match: re.Match) -> dict[str, Any]:
    if match.group("n") is not None:
        return {"type": "Discrete", "n": int(match.group("n")), "start": int(match.group("start") or 0)}
    return {
        "type": "Box",
        "low": float(match.group("low")),
        "high": float(match.group("high")),
        "shape": [int(side) for side in match.group("shape").split(", ")],
        "dtype": match.group("dtype"),
    }


def _uniform_bound(text: Any) -> float | None:
    """The one number a printed numpy array holds (``None``: several, or none)."""
    values = {float(token) for token in _NUMBER.findall(str(text))}
    return values.pop() if len(values) == 1 else None


def manifest_from_data(data: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """A manifest rebuilt from the readable parts of a Stable-Baselines3 ``data`` entry (zips saved before
    :meth:`StyleSAC.save <agents.style_sac.StyleSAC.save>` wrote ``rl_nst.json``).

    :param data: the parsed ``data`` JSON.
    :param path: the model file (for messages).
    :raises UnsafeModelError: a part needed that only its pickle holds.
    :raises ModelLoadError: not a Stable-Baselines3 policy's data.
    """
    policy_class = data.get("policy_class")
    if not isinstance(policy_class, Mapping) or ":serialized:" not in policy_class:
        raise ModelLoadError("its data names no policy_class (not a Stable-Baselines3 model).")
    name = pickled_class_reference(policy_class[":serialized:"], path)
    kwargs = data.get("policy_kwargs", {})
    if not isinstance(kwargs, Mapping) or ":serialized:" in kwargs:
        raise refuse(path, "its policy_kwargs (they hold Python objects, e.g. an optimizer class)")
    observation = data.get("observation_space")
    text = observation.get("spaces") if isinstance(observation, Mapping) else None
    entries = list(_ENTRY.finditer(text)) if isinstance(text, str) else []
    if not entries or "{" + ", ".join(m.group(0) for m in entries) + "}" != text:
        raise refuse(path, "its observation_space (its readable copy is not a Dict of Box and Discrete spaces)")
    action = data.get("action_space")
    action_spec: dict[str, Any] | None = None
    if isinstance(action, Mapping) and isinstance(action.get("_shape"), list) and isinstance(action.get("dtype"), str):
        low = _uniform_bound(action.get("low_repr") or action.get("low"))
        high = _uniform_bound(action.get("high_repr") or action.get("high"))
        if low is not None and high is not None:
            action_spec = {"type": "Box", "low": low, "high": high, "shape": action["_shape"], "dtype": action["dtype"]}
    if action_spec is None:
        raise refuse(path, "its action_space (its readable copy is not a Box with one low and one high)")
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "policy_class": name,
        "policy_kwargs": {key: value for key, value in kwargs.items() if key != "device"},
        "unsaved_arguments": [],
        "observation_space": {"type": "Dict", "spaces": {m.group("key"): _repr_space(m) for m in entries}},
        "action_space": action_spec,
    }


# ------------------------------------------------------------------------------ building the policy
def build_policy(manifest: Any, state_dict: Any, path: str | os.PathLike) -> ActorBuilderPolicy:
    """The policy a manifest describes, holding ``state_dict`` (on the CPU).

    :param manifest: the parsed manifest (:func:`~agents.style_sac.manifest.policy_manifest`).
    :param state_dict: the policy's tensors by name.
    :param path: the model file (for messages).
    :raises UnsafeModelError: a manifest whose arguments are Python objects.
    :raises ModelLoadError: a manifest or state dict that does not describe one of :data:`POLICY_CLASSES`.
    """
    if not isinstance(manifest, Mapping) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelLoadError(f"its {MANIFEST_NAME} is not an rl-nst manifest.")
    version = manifest.get("version")
    if not isinstance(version, int) or not 1 <= version <= MANIFEST_VERSION:
        raise ModelLoadError(f"its manifest version {version!r} is not one this package reads (1..{MANIFEST_VERSION}).")
    name = manifest.get("policy_class")
    if name not in POLICY_CLASSES:
        raise ModelLoadError(f"its policy class {name!r} is not one the package builds ({POLICY_CLASS_NAMES}).")
    unsaved = manifest.get("unsaved_arguments") or []
    if unsaved:
        raise refuse(path, f"the policy arguments {unsaved} (Python objects the manifest could not hold)")
    kwargs = manifest.get("policy_kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise ModelLoadError("its policy_kwargs are not an object of named arguments.")
    kwargs = {k: v for k, v in kwargs.items() if k not in TRAINING_ONLY_ARGUMENTS and k not in SEPARATE_ARGUMENTS}
    observation_space = space_from_json(manifest.get("observation_space"), "observation_space")
    action_space = space_from_json(manifest.get("action_space"), "action_space")
    try:
        policy = POLICY_CLASSES[name](observation_space, action_space, lambda _: 0.0, **kwargs)  # inference only
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"its {name} arguments are refused: {exc}") from exc
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise ModelLoadError("its weights are not a state dict of named tensors.")
    try:
        policy.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"its weights do not fit a {name} with its arguments: {exc}") from exc
    return policy


def _read_weights(archive: zipfile.ZipFile, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if POLICY_WEIGHTS not in archive.namelist():
        raise ModelLoadError(f"it holds no {POLICY_WEIGHTS} (not a StyleSAC model).")
    raw = read_member(archive, POLICY_WEIGHTS, MAX_WEIGHTS_BYTES)
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise refuse(path, f"objects in its {POLICY_WEIGHTS} (more than tensors)") from None
        raise ModelLoadError(f"its {POLICY_WEIGHTS} is damaged: {exc}") from exc
    except Exception as exc:  # torch.load reports a damaged file with many exception types
        raise ModelLoadError(f"its {POLICY_WEIGHTS} is damaged: {type(exc).__name__}: {exc}") from exc


def _parse_json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"its {name!r} entry is not JSON ({exc}).") from None


def load_zip_policy(path: str | os.PathLike, device: torch.device | str = "auto") -> ActorBuilderPolicy:
    """The policy of a StyleSAC zip, read without unpickling (see the module docstring).

    :param path: the zip.
    :param device: where the policy lives (``"auto"``: CUDA when available).
    :raises UnsafeModelError: a zip that could only be loaded by unpickling.
    :raises ModelLoadError: a damaged zip, or not a StyleSAC model (messages start ``Could not load``).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if MANIFEST_NAME in names:
                manifest = _parse_json(read_member(archive, MANIFEST_NAME, MAX_DATA_BYTES), MANIFEST_NAME)
            elif "data" in names:
                data = _parse_json(read_member(archive, "data", MAX_DATA_BYTES), "data")
                if not isinstance(data, Mapping):
                    raise ModelLoadError("its data is not a JSON object (not a Stable-Baselines3 model).")
                manifest = manifest_from_data(data, path)
            else:
                raise ModelLoadError(f"it holds neither {MANIFEST_NAME} nor data (not a Stable-Baselines3 model).")
            state_dict = _read_weights(archive, path)
        policy = build_policy(manifest, state_dict, path)
    except UnsafeModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise ModelLoadError(f"Could not load {path} as a StyleSAC model: damaged zip ({exc}).") from exc
    except (ModelLoadError, ValueError) as exc:
        raise ModelLoadError(f"Could not load {path} as a StyleSAC model: {exc}") from exc
    return policy.to(resolve_device(device))


# ------------------------------------------------------------------------------ safetensors
def save_safetensors_policy(
    policy: ActorBuilderPolicy, path: str | os.PathLike, num_timesteps: int | None = None
) -> Path:
    """Write ``policy``'s state dict as safetensors, its manifest in the header (written atomically).

    :param policy: the policy.
    :param path: the file to write.
    :param num_timesteps: the environment steps it was trained for (informative).
    :return: the path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in policy.state_dict().items()}
    with atomic_path(path) as partial:
        save_file(tensors, str(partial), metadata={MANIFEST_NAME: manifest_json(policy, num_timesteps)})
    return path


def load_safetensors_policy(path: str | os.PathLike, device: torch.device | str = "auto") -> ActorBuilderPolicy:
    """The policy of a safetensors file written by :func:`save_safetensors_policy` (nothing is unpickled).

    :param path: the file.
    :param device: where the policy lives (``"auto"``: CUDA when available).
    :raises ModelLoadError: a damaged file, or one without the manifest.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as weights:
            metadata = weights.metadata() or {}
            if MANIFEST_NAME not in metadata:
                raise ModelLoadError(f"its header holds no {MANIFEST_NAME} (not written by {CONVERT_COMMAND}).")
            manifest = _parse_json(metadata[MANIFEST_NAME].encode("utf-8"), MANIFEST_NAME)
            state_dict = {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118
        policy = build_policy(manifest, state_dict, path)
    except UnsafeModelError:
        raise
    except ModelLoadError as exc:
        raise ModelLoadError(f"Could not load {path} as a safetensors policy: {exc}") from exc
    except Exception as exc:  # safetensors reports a damaged file with its own exception type
        raise ModelLoadError(f"Could not load {path} as a safetensors policy: {type(exc).__name__}: {exc}") from exc
    return policy.to(resolve_device(device))
