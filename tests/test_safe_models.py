"""Model files are read without unpickling (``agents.inference.model_files``): a crafted zip whose pickled
entry would create a file is refused by ``load_policy`` and ``python -m agents.stylize`` and the file never
appears; the zips the package writes (with and without the ``rl_nst.json`` manifest), the shipped models and
safetensors exports load on the safe path with outputs equal to ``StyleSAC.load``'s."""

from __future__ import annotations

import base64
import builtins
import io
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import StyleSAC, style_sac
from agents.cli import export_weights
from agents.errors import ModelLoadError, UnsafeModelError
from agents.inference.model_files import CONVERT_COMMAND, pickled_class_reference
from agents.inference.models import load_policy
from agents.style_sac.manifest import MANIFEST_NAME, POLICY_CLASS_NAMES, space_from_json, space_to_json

SIZE = 16
TINY = dict(learning_starts=4, batch_size=2, buffer_size=16, verbose=0, device="cpu", seed=0)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread(single_torch_thread: None) -> None:
    """Small images: one torch thread is fastest (see conftest)."""


class CreateFile:
    """Unpickling an instance creates ``path`` (``open(path, "w")``): what a crafted model file can do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.open, (str(self.path), "w")


def payload(marker: Path) -> str:
    """A base64 cloudpickle, as Stable-Baselines3 stores it, that creates ``marker`` when unpickled."""
    return base64.b64encode(cloudpickle.dumps(CreateFile(marker))).decode()


def forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every route to the pickle module's loaders raise (``torch.load(weights_only=True)`` has its own)."""

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "loads", refuse)
        monkeypatch.setattr(module, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing may be unpickled during the test (:func:`forbid_unpickling`)."""
    forbid_unpickling(monkeypatch)
    yield


def env_for(policy: str) -> gym.Env:
    if policy == "RLNSTVideoPolicy":
        kwargs = dict(frames_per_episode=2, steps_per_frame=2, style="starry_night", style_loss="gram")
        return gym.make("NSTVideo-v0", image_size=SIZE, device="cpu", **kwargs)
    if policy == "RLNSTPolicy":
        return gym.make(
            "NST-v0", image_size=SIZE, device="cpu", style="starry_night", observe_content=True, style_loss="gram"
        )
    return gym.make("NST-v0", image_size=SIZE, device="cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A zip of each policy class, trained a few steps (RLMiniStyler also with a residual builder)."""
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for name, policy, kwargs in (
        ("ministyler", "MiniStylerPolicy", {}),
        ("residual", "MiniStylerPolicy", {"residual_builder": True, "latent_dtype": "float16"}),
        ("rlnst", "RLNSTPolicy", {"style_weight": 1e4}),
        ("video", "RLNSTVideoPolicy", {"unroll_steps": 1}),
    ):
        model = StyleSAC(policy, env_for(policy), policy_kwargs=kwargs, **TINY)
        model.learn(6)
        paths[name] = folder / f"{name}.zip"
        model.save(paths[name].with_suffix(""))  # Stable-Baselines3's rule: ".zip" is added
    return paths


def act(policy, env: gym.Env) -> np.ndarray:
    obs, _ = env.reset(seed=1)
    image, _ = policy.predict(obs, deterministic=True)
    return image


def assert_same_policy(safe, reference, env: gym.Env) -> None:
    assert type(safe) is type(reference)
    assert safe.observation_space == reference.observation_space and safe.action_space == reference.action_space
    assert safe._get_constructor_parameters().keys() == reference._get_constructor_parameters().keys()
    state, expected = safe.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)
    np.testing.assert_array_equal(act(safe, env), act(reference, env))


def strip(path: Path, out: Path, replace: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a zip without some entries and with others replaced."""
    replace = replace or {}
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as copy:
        for item in source.infolist():
            if item.filename not in drop:
                copy.writestr(item, replace.get(item.filename, source.read(item.filename)))
    return out


def edit_data(path: Path, **entries) -> bytes:
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    for key, value in entries.items():
        data[key] = value
    return json.dumps(data).encode()


# ------------------------------------------------------------------------------------------ crafted files
def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The crafted entry is live: the unpickling loader (StyleSAC.load) creates the file."""
    marker = tmp_path / "pwned"
    pickle.loads(base64.b64decode(payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("entry", ["policy_class", "policy_kwargs", "observation_space"])
def test_crafted_zip_without_manifest_is_refused(saved: dict[str, Path], tmp_path: Path, entry: str) -> None:
    marker = tmp_path / f"pwned_by_{entry}"
    crafted = {":type:": "<class 'abc.ABCMeta'>", ":serialized:": payload(marker)}
    data = edit_data(saved["ministyler"], **{entry: crafted})
    path = strip(saved["ministyler"], tmp_path / "crafted.zip", replace={"data": data}, drop=(MANIFEST_NAME,))
    with pytest.raises(UnsafeModelError) as refused:
        load_policy(path, "cpu")
    message = str(refused.value)
    assert "\n" not in message and CONVERT_COMMAND in message and "--allow-pickle" in message and entry in message
    assert not marker.exists()


def test_crafted_policy_pth_is_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(saved["ministyler"]) as archive:
        state = torch.load(archive.open("policy.pth"), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**state, "extra": CreateFile(marker)}, buffer)
    path = strip(saved["ministyler"], tmp_path / "crafted.zip", replace={"policy.pth": buffer.getvalue()})
    with pytest.raises(UnsafeModelError, match="policy.pth"):
        load_policy(path, "cpu")
    assert not marker.exists()


def test_pickles_the_safe_path_does_not_need_are_never_read(saved: dict[str, Path], tmp_path: Path) -> None:
    """A payload in an entry the policy does not need (the last observation) is left alone: the zip loads."""
    marker = tmp_path / "pwned"
    crafted = {":type:": "<class 'collections.OrderedDict'>", ":serialized:": payload(marker)}
    data = edit_data(saved["ministyler"], _last_obs=crafted)
    for drop in ((), (MANIFEST_NAME,)):
        path = strip(saved["ministyler"], tmp_path / f"crafted{len(drop)}.zip", replace={"data": data}, drop=drop)
        assert type(load_policy(path, "cpu")).__name__ == "MiniStylerPolicy"
    assert not marker.exists()


def test_stylize_refuses_a_crafted_zip_in_one_line(saved: dict[str, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted = {":type:": "<class 'abc.ABCMeta'>", ":serialized:": payload(marker)}
    data = edit_data(saved["ministyler"], policy_class=crafted)
    path = strip(saved["ministyler"], tmp_path / "crafted.zip", replace={"data": data}, drop=(MANIFEST_NAME,))
    argv = ["--model", str(path), "--content", "chelsea", "--style", "starry_night", "--out", str(tmp_path / "o")]
    result = subprocess.run(
        [sys.executable, "-m", "agents.stylize", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Refused") and CONVERT_COMMAND in lines[0], lines
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_class_references_are_read_from_opcodes(tmp_path: Path) -> None:
    for name in POLICY_CLASS_NAMES:
        reference = base64.b64encode(cloudpickle.dumps(getattr(style_sac, name))).decode()
        assert pickled_class_reference(reference, "m.zip") == name
    for bad in (base64.b64encode(pickle.dumps(torch.nn.Linear)).decode(), "not base64!", payload(tmp_path / "x")):
        with pytest.raises(UnsafeModelError):
            pickled_class_reference(bad, "m.zip")
    assert not (tmp_path / "x").exists()


def test_manifests_that_describe_too_much_are_refused() -> None:
    box = {"type": "Box", "low": 0, "high": 255, "shape": [3, 100_000, 100_000], "dtype": "uint8"}
    for spec in (box, {**box, "shape": [3, 16, 16], "dtype": "object"}, {"type": "Tuple"}, "Box", None):
        with pytest.raises(ValueError):
            space_from_json(spec)
    space = env_for("RLNSTVideoPolicy").observation_space
    assert space_from_json(json.loads(json.dumps(space_to_json(space)))) == space


# ------------------------------------------------------------------------------------------ what still loads
@pytest.mark.parametrize("name", ["ministyler", "residual", "rlnst", "video"])
def test_saved_models_load_safely_with_stylesac_load_outputs(
    saved: dict[str, Path], tmp_path: Path, name: str, no_unpickling: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    safe = load_policy(saved[name], "cpu")
    legacy = load_policy(strip(saved[name], tmp_path / "legacy.zip", drop=(MANIFEST_NAME,)), "cpu")
    with pytest.raises(AssertionError, match="unpickled"):
        StyleSAC.load(saved[name], device="cpu")  # the guard works: Stable-Baselines3's loader unpickles
    monkeypatch.undo()
    reference = StyleSAC.load(saved[name], device="cpu", buffer_size=1).policy
    env = env_for(type(reference).__name__)
    assert_same_policy(safe, reference, env)
    assert_same_policy(legacy, reference, env)


def test_a_zip_saved_before_the_manifest_and_the_policies_package_loads(tmp_path: Path, no_unpickling: None) -> None:
    """``tests/data`` keeps the ``data`` of a zip saved by an older module layout, gymnasium and package."""
    old_data = (Path(__file__).parent / "data" / "ministyler_16px_saved_before_policies_package.data.json").read_bytes()
    model = StyleSAC("MiniStylerPolicy", env_for("MiniStylerPolicy"), **TINY)
    model.save(tmp_path / "today.zip")
    path = strip(tmp_path / "today.zip", tmp_path / "old.zip", replace={"data": old_data}, drop=(MANIFEST_NAME,))
    policy = load_policy(path, "cpu")
    assert_same_policy(policy, model.policy, env_for("MiniStylerPolicy"))


@pytest.mark.parametrize("name", ["rlministyler_ft128", "rlnst:blue_swirls"])
def test_shipped_models_load_safely_and_match_stylesac_load(name: str, tmp_path: Path) -> None:
    policy_class = "RLNSTPolicy" if name.startswith("rlnst") else "MiniStylerPolicy"
    model = StyleSAC(policy_class, env_for(policy_class), **TINY).load_pretrained(name)
    model.save(tmp_path / "model.zip")
    reference = StyleSAC.load(tmp_path / "model.zip", device="cpu", buffer_size=1).policy
    with pytest.MonkeyPatch.context() as patch:
        forbid_unpickling(patch)
        shipped, zipped = load_policy(name, "cpu"), load_policy(tmp_path / "model.zip", "cpu")
    env = env_for(policy_class)
    assert_same_policy(zipped, reference, env)
    obs, _ = env.reset(seed=1)
    batch = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
    with torch.no_grad():
        torch.testing.assert_close(shipped.act(batch, True)[1], reference.act(batch, True)[1], rtol=0, atol=0)


def test_safetensors_export_round_trips_every_policy(saved: dict[str, Path], tmp_path: Path) -> None:
    for name in ("residual", "rlnst", "video"):
        out = tmp_path / f"{name}.safetensors"
        assert export_weights.main([str(saved[name]), "--format", "safetensors", "--out", str(out)]) == 0
        reference = StyleSAC.load(saved[name], device="cpu", buffer_size=1).policy
        assert_same_policy(load_policy(out, "cpu"), reference, env_for(type(reference).__name__))
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_policy(out, "cpu")


def test_export_converts_a_refused_zip_only_with_allow_pickle(
    saved: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trusted zip whose policy_kwargs are Python objects (an optimizer class): refused, then converted."""
    kwargs = {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(cloudpickle.dumps({})).decode()}
    data = edit_data(saved["ministyler"], policy_kwargs=kwargs)
    path = strip(saved["ministyler"], tmp_path / "old.zip", replace={"data": data}, drop=(MANIFEST_NAME,))
    out = tmp_path / "converted.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        export_weights.main([str(path), "--format", "safetensors", "--out", str(out)])
    assert exit_info.value.code == 2 and "--allow-pickle" in capsys.readouterr().err and not out.exists()
    assert export_weights.main([str(path), "--allow-pickle", "--format", "safetensors", "--out", str(out)]) == 0
    reference = StyleSAC.load(saved["ministyler"], device="cpu", buffer_size=1).policy
    assert_same_policy(load_policy(out, "cpu"), reference, env_for("MiniStylerPolicy"))
