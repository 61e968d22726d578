"""Shared benchmark plumbing: machine description, timing with warm-up and synchronisation, peak memory,
writing a result table as Markdown, CSV and JSON (and printing it), and deterministic controllers that play
an env episode; the command-line flags every benchmark shares (:func:`benchmark_parser`) and the ending of every
figure (:func:`save_figure`)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import yaml

from agents.inference.allocator import release_freed_memory

#: Where every benchmark writes its tables and figures by default.
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Row = dict[str, Any]
#: A deterministic controller: observation dict -> next image (the env's action).
Controller = Callable[[dict[str, np.ndarray]], np.ndarray]


def configure_torch(threads: int | None) -> int:
    """Set the number of torch CPU threads (``None``: keep torch's choice) and flush denormal floats.

    Denormals slow CPU convolutions down by up to 2x (``agents.train_sac`` flushes them too).

    :param threads: intra-op threads for torch on the CPU.
    :return: the thread count in effect.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return torch.get_num_threads()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU, core count, memory, library versions, threads, the device used and the load average.

    :param device: the device the benchmark ran on (its name is recorded for CUDA).
    """
    device = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    info: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    return info


def release_free_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc's ``malloc_trim``; a no-op elsewhere),
    so that an RSS delta measured next counts new allocations instead of reusing memory an earlier call freed."""
    gc.collect()
    release_freed_memory()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU), so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory a block of code adds, as a context manager (``with PeakMemory(dev) as m: ...; m.bytes``).

    - CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at entry (torch tensors only).
    - CPU: the process's resident set size (RSS) polled every ``interval_s`` by a thread, peak minus the RSS at
      entry (after :func:`release_free_memory`). This sees every allocator (torch, onnxruntime, numpy;
      ``tracemalloc`` sees only Python's), but memory an allocator keeps in its own pool from earlier calls and
      reuses does not show, so measure a first call, e.g. the warm-up (fresh onnxruntime sessions).

    :param device: where the measured code allocates.
    :param interval_s: RSS polling period on the CPU.
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.001) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            self._start = self._peak = self._process.memory_info().rss
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            self.bytes = max(0, self._peak - self._start)


@dataclass
class Timing:
    """Wall-clock seconds of repeated calls after a warm-up call, and the warm-up call's peak memory."""

    times: list[float]
    warmup_s: float
    peak_bytes: int

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.times)


def time_calls(fn: Callable[[], Any], device: torch.device | str, repeats: int, budget_s: float = math.inf) -> Timing:
    """Time ``fn`` after one warm-up call (whose peak memory is measured), synchronising the device.

    :param fn: the work to time (no arguments).
    :param device: where ``fn`` runs (CUDA is synchronised before and after each call).
    :param repeats: timed calls at most.
    :param budget_s: stop early once the timed calls took this long (at least one call is timed), so large
        inputs on slow devices get fewer repeats.
    """
    device = torch.device(device)
    synchronize(device)
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        fn()
        synchronize(device)
    warmup_s = time.perf_counter() - start
    times: list[float] = []
    while len(times) < max(1, repeats) and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(times, warmup_s, memory.bytes)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}" if abs(value) < 100 else f"{value:,.1f}"
        return f"{value:.3e}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)


def markdown_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``rows`` (dicts) restricted to ``columns``, numbers right-aligned.

    :param rows: one dict per row; a missing key prints as ``-``.
    :param columns: the keys to show, in order (also the header).
    """
    numeric = [all(isinstance(r.get(c), (int, float, np.number)) or r.get(c) is None for r in rows) for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Report:
    """One benchmark's result table and its context, written as ``NAME.md``, ``NAME.csv`` and ``NAME.json``.

    :param name: file stem under the output folder.
    :param title: Markdown title.
    :param columns: the columns of the Markdown table (the CSV and JSON keep every key of every row).
    :param rows: the results, one dict per row.
    :param settings: the benchmark's arguments.
    :param machine: :func:`machine_info`.
    :param notes: Markdown paragraphs printed under the table (method, caveats).
    :param extra_tables: further ``(heading, rows, columns)`` tables for the Markdown file and the JSON.
    """

    name: str
    title: str
    columns: list[str]
    rows: list[Row]
    settings: dict[str, Any]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[str, list[Row], list[str]]] = field(default_factory=list)

    def markdown(self) -> str:
        """The whole Markdown document: title, table, notes, extra tables, machine line."""
        parts = [f"# {self.title}", "", markdown_table(self.rows, self.columns), ""]
        parts += [note + "\n" for note in self.notes]
        for heading, rows, columns in self.extra_tables:
            parts += [f"## {heading}", "", markdown_table(rows, columns), ""]
        m = self.machine
        parts.append(
            f"Machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['memory_gib']} GiB), device {m['device']}"
            + (f" ({m['gpu']})" if "gpu" in m else "")
            + f", torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}, "
            f"Python {m['python']}, {m['date_utc']}"
            + (f"; load average at start {m['load_average_1_5_15min']}" if "load_average_1_5_15min" in m else "")
            + (f", at end {m['load_average_at_end']}" if "load_average_at_end" in m else "")
            + "."
        )
        return "\n".join(parts) + "\n"

    def write(self, out_dir: Path = RESULTS_DIR) -> list[Path]:
        """Write the three files, print the Markdown, and return the paths.

        :param out_dir: output folder (created if needed).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(os, "getloadavg"):
            self.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        text = self.markdown()
        paths = [out_dir / f"{self.name}.{ext}" for ext in ("md", "csv", "json")]
        paths[0].write_text(text)
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(paths[1], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        document = {
            "title": self.title,
            "settings": self.settings,
            "machine": self.machine,
            "rows": self.rows,
            "notes": self.notes,
            "extra_tables": {heading: rows for heading, rows, _ in self.extra_tables},
        }
        paths[2].write_text(json.dumps(_jsonable(document), indent=2))
        print(text)
        return paths


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (benchmarks only write files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 120) -> Path:
    """Lay a matplotlib figure out (``tight_layout``, unless it has a layout engine already), write it and close it.

    :param fig: the figure.
    :param path: the image file to write.
    :param dpi: its resolution.
    """
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def benchmark_parser(
    doc: str,
    *,
    device: str | None = "auto",
    device_help: str = "auto, cpu, cuda, ...",
    threads_help: str | None = "torch CPU threads (default: torch's choice)",
    seed_help: str | None = None,
    out: Path | None = RESULTS_DIR,
    out_help: str = "output folder",
) -> argparse.ArgumentParser:
    """A benchmark's command line with the flags they share: ``--device``, ``--threads``, ``--seed``, ``--out``.

    :param doc: the benchmark's module docstring (its first line describes the command in ``--help``).
    :param device: ``--device``'s default (``None``: no such flag).
    :param device_help: its help.
    :param threads_help: ``--threads``' help (``None``: no such flag); at least 1, default torch's choice.
    :param seed_help: ``--seed``'s help (``None``: no such flag); default 0.
    :param out: ``--out``'s default folder (``None``: no such flag).
    :param out_help: its help.
    """
    from agents.cli import device_name, int_range

    p = argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if device is not None:
        p.add_argument("--device", type=device_name, default=device, help=device_help)
    if threads_help is not None:
        p.add_argument("--threads", type=int_range(1, 1024), default=None, help=threads_help)
    if seed_help is not None:
        p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help=seed_help)
    if out is not None:
        p.add_argument("--out", type=Path, default=out, help=out_help)
    return p


def settings_of(args: Any) -> dict[str, Any]:
    """An argparse namespace as a JSON-ready dict."""
    return _jsonable(vars(args))


def style_sac_config(image_size: int, seed: int = 0, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """StyleSAC's ``NST-v0`` run configuration from ``agents/training/hyperparams/style_sac.yml`` at ``image_size``.

    The layout is :func:`agents.training.config.build_config`'s (so :func:`agents.training.experiment.make_env` accepts it);
    :func:`agents.training.config.algorithm_kwargs` gives its constructor arguments.

    :param image_size: env image side in px.
    :param seed: seed of env and networks.
    :param overrides: hyper-parameters replacing the file's (nested dict).
    """
    from agents.training.config import HYPERPARAMS_FILE, merge

    config = merge(yaml.safe_load(HYPERPARAMS_FILE.read_text())["NST-v0"], overrides or {})
    config["env_kwargs"] = {**config.get("env_kwargs", {}), "image_size": image_size}
    config.update(env_id="NST-v0", seed=seed, n_envs=1)
    return config


def policy_controller(model: str | Path, device: torch.device | str = "cpu") -> Controller:
    """A released model name or StyleSAC zip acting deterministically (its mean latent) at any image size
    (``predict`` would insist on the size the model was saved with)."""
    from agents.inference.models import load_policy

    policy = load_policy(model, device)
    policy.set_training_mode(False)

    @torch.no_grad()
    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {key: torch.as_tensor(obs[key][None], device=policy.device) for key in policy.required_keys}
        return policy.act(tensors, deterministic=True)[1][0].cpu().numpy()

    return act


def unchanged_photo(obs: dict[str, np.ndarray]) -> np.ndarray:
    """Leave the moving image as it is: the photo's own losses, where every episode starts."""
    return obs["moving"].astype(np.float32) / 255.0
