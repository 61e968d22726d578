"""The tracked tree stays light, its files short and portable, and its modules' imports acyclic and layered.

Every check reads the files ``git ls-files`` lists (those that exist on disk); without git or outside a git
checkout they are skipped. Limits:

- the tracked files weigh under :data:`MAX_TREE_BYTES` together;
- no tracked ``.py``, ``.md`` or ``.yml`` file is over :data:`MAX_LINES` lines (README.md included), except the
  benchmarks' result data under ``benchmarks/results/`` (generated tables and reports);
- no tracked text file names an absolute path of one machine (a home, the root user's folder, a temporary or a
  work folder): write paths relative to the repository, ``~`` or ``tmp_path``;
- the imports among the modules of ``agents/``, ``nst_env/`` and ``benchmarks/`` (module-level and inside
  functions) have no cycle; an import of a package counts as one of its ``__init__.py``, and a package's
  ``__init__.py`` importing its own submodules is not counted;
- only ``agents/cli/`` imports ``agents.cli`` or leaves the process (``raise SystemExit``, ``sys.exit(``): the
  library raises exceptions; :data:`ENTRY_MODULES` (``python -m agents.X`` shims over ``agents.cli``) and
  ``benchmarks/`` (command lines themselves) may do both; ``tests/`` are not checked.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_TREE_BYTES = 40 * 10**6
MAX_LINES = 500
LINE_LIMITED = (".py", ".md", ".yml")
LINE_EXEMPT = ("benchmarks/results/",)
TEXT_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".toml", ".cfg", ".json", ".csv", ".txt")
#: A path that starts at one of these top-level folders (not ``x/tmp/``, ``../home/`` or ``host.com/home/``).
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|root|home|tmp|Users)/")
PACKAGES = ("agents", "nst_env", "benchmarks")
CLI = "agents.cli"
#: Thin ``python -m agents.X`` entry modules: they may import ``agents.cli`` and exit with its status.
ENTRY_MODULES = (
    "agents/train_sac.py",
    "agents/train.py",
    "agents/stylize.py",
    "agents/export_onnx.py",
    "agents/export_weights.py",
    "agents/app.py",
)


@cache
def _tracked() -> tuple[str, ...] | str:
    """The tracked files that exist on disk (POSIX paths from the root), or why they cannot be listed."""
    if shutil.which("git") is None:
        return "git is not installed"
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"git ls-files failed: {exc}"
    if listed.returncode != 0:
        return f"not a git checkout ({listed.stderr.decode(errors='replace').strip()})"
    names = [name for name in listed.stdout.decode().split("\0") if name]
    return tuple(name for name in names if (ROOT / name).is_file())


def tracked() -> tuple[str, ...]:
    """The tracked files that exist on disk; skips the calling test without git or a git checkout."""
    files = _tracked()
    if isinstance(files, str):
        pytest.skip(files)
    return files


def read_text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8", errors="replace")


def test_tracked_files_weigh_under_the_limit() -> None:
    sizes = {name: (ROOT / name).stat().st_size for name in tracked()}
    total = sum(sizes.values())
    biggest = sorted(sizes, key=sizes.get, reverse=True)[:10]
    assert total < MAX_TREE_BYTES, f"tracked files weigh {total / 1e6:.1f} MB; the largest: " + ", ".join(
        f"{name} ({sizes[name] / 1e6:.1f} MB)" for name in biggest
    )


def test_no_tracked_source_or_doc_is_over_the_line_limit() -> None:
    long = {}
    for name in tracked():
        if name.endswith(LINE_LIMITED) and not name.startswith(LINE_EXEMPT):
            lines = len(read_text(name).splitlines())
            if lines > MAX_LINES:
                long[name] = lines
    assert not long, f"over {MAX_LINES} lines: " + ", ".join(f"{name} ({n})" for name, n in sorted(long.items()))


def test_no_tracked_text_file_names_a_machine_path() -> None:
    found = {}
    for name in tracked():
        if name.endswith(TEXT_SUFFIXES):
            for number, line in enumerate(read_text(name).splitlines(), 1):
                match = MACHINE_PATH.search(line)
                if match:
                    found.setdefault(name, f"line {number}: {line[max(match.start() - 20, 0) : match.end() + 30]!r}")
    assert not found, "absolute machine paths (first per file): " + "; ".join(
        f"{name} {where}" for name, where in sorted(found.items())
    )


# ---------------------------------------------------------------------------------------------- imports
@cache
def modules() -> dict[str, tuple[str, ast.Module]]:
    """Each tracked module of :data:`PACKAGES`: dotted name -> (path, syntax tree)."""
    out = {}
    for name in tracked():
        parts = name.removesuffix(".py").split("/")
        if name.endswith(".py") and parts[0] in PACKAGES:
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = (name, ast.parse(read_text(name), filename=name))
    return out


def is_package(module: str) -> bool:
    return modules()[module][0].endswith("/__init__.py")


def imported_names(module: str) -> Iterator[tuple[ast.stmt, list[str]]]:
    """Each import statement of ``module`` (anywhere in it) with the dotted names it may load, deepest first
    per name: ``from a.b import c`` gives ``a.b.c`` then ``a.b``; relative imports are made absolute."""
    tree = modules()[module][1]
    package = module if is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, [alias.name]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield node, [f"{base}.{alias.name}", base]


def resolve(name: str) -> str | None:
    """The known module that importing ``name`` loads last: ``name`` itself or its longest known prefix."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


@cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (none of its own submodules when it is a package's ``__init__``)."""
    graph: dict[str, set[str]] = {}
    for module in modules():
        edges = graph.setdefault(module, set())
        for _, names in imported_names(module):
            target = next((t for t in map(resolve, names) if t), None)
            if target is None or target == module:
                continue
            if is_package(module) and target.startswith(module + "."):
                continue
            edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one module (Tarjan, then BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth: the longest import chain (tens of modules)
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    out = []
    for component in sorted(components):
        start, members = component[0], set(component)
        paths = {start: [start]}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for target in sorted(graph[node] & members):
                if target == start:
                    out.append([*paths[node], start])
                    queue = []
                    break
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    queue.append(target)
    return out


def test_cycle_finder_reports_one_cycle_per_tangle() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "a"], ["c", "d", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_modules_import_each_other_without_cycles() -> None:
    tracked()
    assert modules(), "no tracked module of agents/, nst_env/ or benchmarks/"
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def exits(tree: ast.Module) -> list[int]:
    """Lines of ``raise SystemExit`` and ``sys.exit(...)`` in ``tree``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr == "exit" and isinstance(func.value, ast.Name) and func.value.id == "sys":
                lines.append(node.lineno)
    return sorted(lines)


def test_only_the_command_lines_import_agents_cli_or_exit() -> None:
    tracked()
    found = []
    for module, (path, tree) in sorted(modules().items()):
        if module == CLI or module.startswith(CLI + ".") or module.startswith("benchmarks") or path in ENTRY_MODULES:
            continue
        lines = {
            node.lineno
            for node, names in imported_names(module)
            if any(name == CLI or name.startswith(CLI + ".") for name in names)
        }
        found += [f"{path}:{line} imports {CLI}" for line in sorted(lines)]
        found += [f"{path}:{line} exits the process" for line in exits(tree)]
    assert not found, "outside agents/cli/: " + "; ".join(found)
