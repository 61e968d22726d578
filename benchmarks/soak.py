"""Memory soak: the resident memory (RSS) of a long StyleSAC training run and of a long stylisation loop.

    python -m benchmarks.soak --threads 1                  # 30 min at 32 px, a checkpoint a minute; 2,000 images
    python -m benchmarks.soak --minutes 2 --images 200     # a shorter look

Two phases, each in a fresh process whose RSS this one samples every ``--interval-s`` (with the step, the replay
buffer's fill and the 1-minute load average):

- training: StyleSAC on ``NST-v0`` at ``--image-size`` with the hyper-parameter file's settings (``--hyperparams``
  overrides some, as for ``agents.train_sac``, which builds the run the same way:
  :class:`agents.training.experiment.Experiment`) for ``--minutes`` (or ``--max-steps`` env steps), a checkpoint
  (model zip and replay buffer, :class:`agents.training.checkpoints.ResumableCheckpoint`) every ``--save-every-s``
  seconds, then ``model.zip``;
- stylisation: that ``model.zip`` loaded as ``agents.stylize`` loads it (with its default backend, ``--backend``),
  then ``--images`` (content, style) pairs stylised ``--steps`` steps each by the command's own per-image function
  (its PNGs, strip and GIF written, the same names over and over): the built-in styles, and photos made from the
  built-in ones, :data:`PHOTOS` files with the longer side drawn between ``--min-side`` and ``--max-side``.

Per phase: the peak RSS (the kernel's high-water mark, ``ru_maxrss``) and the RSS slope in MiB per hour, least
squares over a window: for training, once the replay buffer is full (the second half when it never fills), since
NumPy's buffer arrays take their memory page by page as transitions arrive; for stylisation, the second half of
the images. Beside it the slope the buffer's fill explains in the same window (0 once it is full). Writes
``soak.{md,csv,json,png}`` and the samples, ``soak_rss.csv``, under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import queue
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from agents.cli import cli_main, float_range, int_range
from benchmarks.common import (
    Report,
    Row,
    benchmark_parser,
    configure_torch,
    machine_info,
    pyplot,
    save_figure,
    settings_of,
)

#: Shared progress counters of the phase running: env steps, transitions in the replay buffer, checkpoints
#: saved, images stylised.
STEPS, FILL, CHECKPOINTS, IMAGES = range(4)
MIB = 2**20
#: Photos of the stylisation phase, each a built-in one at a size of its own.
PHOTOS = 32
#: The columns of ``soak_rss.csv``, one row per sample (the counters in :data:`STEPS` ... :data:`IMAGES` order).
SAMPLE_FIELDS = ("phase", "seconds", "rss_mib", "steps", "buffer_transitions", "checkpoints", "images", "load_1min")


def load_1min() -> float | None:
    """The 1-minute load average (``None`` where the platform has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def buffer_bytes(buffer: Any) -> int:
    """Bytes of every array a replay buffer allocated (observations, next observations, actions, rewards, flags,
    env features): what it holds resident once full."""
    arrays = [value for value in vars(buffer).values() if isinstance(value, np.ndarray)]
    arrays += [a for value in vars(buffer).values() if isinstance(value, dict) for a in value.values()]
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


def train(settings: dict[str, Any], folder: str, progress: Any, results: Any) -> None:
    """The training phase, in its own process: train for ``minutes`` (at most ``max_steps`` env steps) with a
    checkpoint every ``save_every_s``.

    :param settings: the command's arguments.
    :param folder: where the run folder goes.
    :param progress: the shared counters (:data:`STEPS`, :data:`FILL`, :data:`CHECKPOINTS`).
    :param results: a queue for the phase's summary.
    """
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.logger import Logger, make_output_format

    from agents.training.checkpoints import ResumableCheckpoint, save_model
    from agents.training.config import HYPERPARAMS_DIR, RunSettings, build_config
    from agents.training.experiment import Experiment, WallClockLimit

    class TimedCheckpoint(ResumableCheckpoint):
        """A checkpoint every ``seconds`` of wall-clock time; the counters updated at every step."""

        def __init__(self, seconds: float, save_path: Path) -> None:
            super().__init__(1, save_path)
            self.seconds, self.last = seconds, 0.0

        def _on_training_start(self) -> None:
            self.last = time.monotonic()

        def _on_step(self) -> bool:
            if time.monotonic() - self.last >= self.seconds:
                self.save_now()
                self.last = time.monotonic()
                progress[CHECKPOINTS] += 1
            progress[STEPS] = self.num_timesteps
            progress[FILL] = self.model.replay_buffer.size()
            return True

    configure_torch(settings["threads"])
    config = build_config(
        "NST-v0",
        overrides=settings["hyperparams"],
        env_kwargs={"image_size": settings["image_size"]},
        seed=settings["seed"],
        hyperparams_file=HYPERPARAMS_DIR / "style_sac.yml",
    )
    run_settings = RunSettings(
        device=settings["device"], log_folder=folder, save_freq=0, eval_freq=0, progress=False, verbose=0
    )
    experiment = Experiment.create("style_sac", config, run_settings)
    model = experiment.build_model()
    run_dir = experiment.run_dir
    logs = str(run_dir / "logs")
    model.set_logger(Logger(logs, [make_output_format("csv", logs)]))  # as a training run logs
    callbacks = [
        TimedCheckpoint(settings["save_every_s"], run_dir / "checkpoints"),
        WallClockLimit(60.0 * settings["minutes"]),
    ]
    model.learn(settings["max_steps"] or 2**62, callback=CallbackList(callbacks), log_interval=10)
    save_model(model, run_dir / "model.zip")
    results.put(
        {
            "model": str(run_dir / "model.zip"),
            "steps": model.num_timesteps,
            "buffer_size": model.replay_buffer.buffer_size,
            "buffer_mib": buffer_bytes(model.replay_buffer) / MIB,
            "peak_rss_mib": peak_rss_mib(),
        }
    )


def stylize(settings: dict[str, Any], folder: str, model: str, progress: Any, results: Any) -> None:
    """The stylisation phase, in its own process: ``images`` pairs through ``agents.stylize``'s per-image code.

    :param settings: the command's arguments.
    :param folder: where the outputs and the ONNX cache go.
    :param model: the trained ``model.zip``.
    :param progress: the shared counters (:data:`IMAGES`).
    :param results: a queue for the phase's summary.
    """
    from PIL import Image

    from agents.cli.stylize import load_style, stylize_image_file
    from agents.inference.allocator import keep_freed_memory
    from agents.inference.backends import make_runner
    from agents.inference.fitting import DEFAULT_STYLE_SIZE
    from agents.inference.models import load_policy
    from nst_env.images import (
        DEFAULT_MAX_PIXELS,
        SAMPLE_CONTENT_DIR,
        SAMPLE_STYLE_DIR,
        load_image,
        resize,
        scan_folder,
    )
    from nst_env.utils import resolve_device

    configure_torch(settings["threads"])
    rng = np.random.default_rng(settings["seed"])
    samples = scan_folder(SAMPLE_CONTENT_DIR)
    photos = []
    for index in range(PHOTOS):
        image = load_image(samples[index % len(samples)])
        side = int(rng.integers(settings["min_side"], settings["max_side"] + 1))
        scale = side / max(image.shape[:2])
        photos.append(Path(folder) / f"photo{index:02d}.png")
        Image.fromarray(resize(image, round(image.shape[1] * scale), round(image.shape[0] * scale))).save(photos[-1])
    runner = make_runner(load_policy(model, resolve_device(settings["device"])), settings["backend"], Path(folder))
    if runner.device.type == "cpu":
        keep_freed_memory()  # as agents.stylize does on the CPU
    styles = [(path.stem, load_style(runner, path, DEFAULT_STYLE_SIZE)) for path in scan_folder(SAMPLE_STYLE_DIR)]
    out = str(Path(folder) / "out")
    args = argparse.Namespace(
        steps=[settings["steps"]], out=out, max_side=None, max_pixels=DEFAULT_MAX_PIXELS, sample=False
    )
    for number in range(settings["images"]):
        photo = photos[number % len(photos)]
        style_name, style = styles[number % len(styles)]
        stylize_image_file(runner, photo, style, f"{photo.stem}__{style_name}", args)
        progress[IMAGES] = number + 1
    results.put({"images": settings["images"], "backend": type(runner).__name__, "peak_rss_mib": peak_rss_mib()})


def run_phase(
    name: str, target: Any, args: tuple[Any, ...], interval_s: float, log: csv.DictWriter
) -> tuple[list[Row], dict[str, Any]]:
    """Run one phase in a fresh (spawned) process, sampling its RSS until it ends.

    :param name: the phase's name in the samples.
    :param target: :func:`train` or :func:`stylize`.
    :param args: its arguments before the counters and the queue.
    :param interval_s: seconds between samples.
    :param log: where each sample is written as it is taken (:data:`SAMPLE_FIELDS`), so that a long run that
        fails late keeps them.
    :return: the samples and the phase's summary.
    :raises RuntimeError: the phase's process failed.
    """
    context = multiprocessing.get_context("spawn")
    progress, results = context.Array("d", 4), context.Queue()
    process = context.Process(target=target, args=(*args, progress, results), daemon=True)
    start = time.monotonic()
    process.start()
    memory = psutil.Process(process.pid)
    samples: list[Row] = []
    summary: dict[str, Any] | None = None
    while summary is None and process.is_alive():
        try:
            rss = memory.memory_info().rss
        except psutil.NoSuchProcess:
            break
        values = (round(time.monotonic() - start, 2), round(rss / MIB, 2), *map(int, progress), load_1min())
        samples.append(dict(zip(SAMPLE_FIELDS, (name, *values))))
        log.writerow(samples[-1])
        try:
            summary = results.get(timeout=interval_s)
        except queue.Empty:
            continue
    if summary is None:  # it may have ended between a sample and the wait
        try:
            summary = results.get(timeout=10)
        except queue.Empty:
            pass
    process.join()
    if summary is None or process.exitcode != 0:
        raise RuntimeError(f"the {name} phase's process ended with status {process.exitcode} before reporting.")
    summary["seconds"] = round(time.monotonic() - start, 1)
    return samples, summary


def slope(samples: list[Row], key: str = "rss_mib") -> float | None:
    """Least-squares slope of ``key`` over the samples' time, per hour (``None``: fewer than 3 samples)."""
    if len(samples) < 3:
        return None
    hours = np.array([s["seconds"] for s in samples]) / 3600
    return float(np.polyfit(hours, np.array([s[key] for s in samples], dtype=float), 1)[0])


def working(samples: list[Row]) -> list[Row]:
    """The samples once the phase's work began (its first step or image), after imports and set-up."""
    return [s for s in samples if s["steps"] > 0 or s["images"] > 0]


def summarise(name: str, samples: list[Row], summary: dict[str, Any]) -> Row:
    """The phase's row: peaks, the window the slope is fitted over, the slope and the buffer fill's share of it."""
    if name == "training":
        for s in samples:
            s["buffer_mib"] = summary["buffer_mib"] * s["buffer_transitions"] / summary["buffer_size"]
        full = [s for s in samples if s["buffer_transitions"] >= summary["buffer_size"]]
        half = [s for s in samples if s["seconds"] >= samples[-1]["seconds"] / 2]
        window, label = (full, "buffer full") if len(full) >= max(3, len(half) // 4) else (half, "second half")
        work, fill = summary["steps"], slope(window, "buffer_mib")
    else:
        window = [s for s in samples if s["images"] >= summary["images"] / 2]
        label, work, fill = "second half of the images", summary["images"], 0.0
    measured = slope(window)
    return {
        "phase": name,
        "seconds": summary["seconds"],
        "work": work,
        "checkpoints": samples[-1]["checkpoints"] if samples else 0,
        "peak_rss_mib": round(summary["peak_rss_mib"], 1),
        "peak_working_rss_mib": max((s["rss_mib"] for s in working(samples)), default=None),
        "window": label,
        "window_rss_start_mib": window[0]["rss_mib"] if window else None,
        "window_rss_end_mib": window[-1]["rss_mib"] if window else None,
        "window_s": round(window[-1]["seconds"] - window[0]["seconds"], 1) if window else 0.0,
        "slope_mib_per_h": measured,
        "buffer_fill_mib_per_h": fill,
        "unexplained_mib_per_h": measured - fill if measured is not None and fill is not None else None,
        "buffer_mib": summary.get("buffer_mib"),
        "backend": summary.get("backend"),
    }


def plot(samples: list[Row], rows: list[Row], path: Path) -> None:
    """RSS over time per phase; for training also what the RSS at the first step plus the buffer's fill gives."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        phase = [s for s in samples if s["phase"] == row["phase"]]
        ax.plot([s["seconds"] / 60 for s in phase], [s["rss_mib"] for s in phase], label="RSS")
        started = working(phase)
        if row["phase"] == "training" and started:
            base = started[0]["rss_mib"] - started[0]["buffer_mib"]
            ax.plot(
                [s["seconds"] / 60 for s in started],
                [base + s["buffer_mib"] for s in started],
                ":",
                label="RSS at the first step + the buffer's fill",
            )
        ax.set_xlabel("minutes")
        ax.set_ylabel("resident memory, MiB")
        rate = row["slope_mib_per_h"]
        ax.set_title(
            f"{row['phase']}: peak {row['peak_rss_mib']:.0f} MiB, "
            + (f"{rate:+.1f} MiB/h ({row['window']})" if rate is not None else "too short for a slope"),
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(
        __doc__, device="cpu", threads_help="torch CPU threads of each phase", seed_help="training and sizes seed"
    )
    p.add_argument("--minutes", type=float_range(0.0), default=30.0, help="training time")
    p.add_argument("--max-steps", type=int_range(0), default=0, help="stop training after N env steps (0: time only)")
    p.add_argument("--image-size", type=int_range(16, 4096), default=32, help="training image side in px")
    p.add_argument(
        "--hyperparams",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="override the hyper-parameter file's values, as agents.train_sac --hyperparams",
    )
    p.add_argument("--save-every-s", type=float_range(0.0), default=60.0, help="seconds between checkpoints")
    p.add_argument("--images", type=int_range(1), default=2000, help="(content, style) pairs to stylise")
    p.add_argument("--steps", type=int_range(1, 1000), default=5, help="stylisation steps per image")
    p.add_argument("--min-side", type=int_range(16), default=32, help="shortest longer side of a photo, px")
    p.add_argument("--max-side", type=int_range(16), default=64, help="longest longer side of a photo, px")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto", help="agents.stylize --backend")
    p.add_argument("--interval-s", type=float_range(0.0), default=1.0, help="seconds between RSS samples")
    args = p.parse_args(argv)
    if args.min_side > args.max_side:
        p.error(f"--min-side {args.min_side} is above --max-side {args.max_side}")
    return args


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Run both phases, write the tables, the samples and the figure; return the phase rows."""
    args = parse_args(argv)
    machine = machine_info(args.device)
    settings = settings_of(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, open(args.out / "soak_rss.csv", "w", newline="") as file:
        log = csv.DictWriter(file, fieldnames=SAMPLE_FIELDS, extrasaction="ignore")
        log.writeheader()
        trained, trained_summary = run_phase("training", train, (settings, folder), args.interval_s, log)
        styled, styled_summary = run_phase(
            "stylisation", stylize, (settings, folder, trained_summary["model"]), args.interval_s, log
        )
    rows = [summarise("training", trained, trained_summary), summarise("stylisation", styled, styled_summary)]
    samples = trained + styled
    plot(samples, rows, args.out / "soak.png")
    Report(
        name="soak",
        title=f"Memory soak: {args.minutes:g} min of training at {args.image_size} px, {args.images} images stylised",
        columns=[
            "phase",
            "seconds",
            "work",
            "checkpoints",
            "peak_rss_mib",
            "peak_working_rss_mib",
            "window",
            "window_s",
            "window_rss_start_mib",
            "window_rss_end_mib",
            "slope_mib_per_h",
            "buffer_fill_mib_per_h",
            "unexplained_mib_per_h",
            "buffer_mib",
        ],
        rows=rows,
        settings=settings,
        machine=machine,
        notes=[
            "Each phase ran in a fresh process; its resident memory (RSS) was sampled every "
            f"{args.interval_s:g} s (`soak_rss.csv`, with the step, the replay buffer's transitions and the 1-minute "
            "load average). `work`: env steps (training) or images (stylisation); `checkpoints`: saves of the "
            f"model and its replay buffer, one every {args.save_every_s:g} s; `peak_rss_mib`: the process's "
            "high-water mark (`ru_maxrss`), imports and set-up included; `peak_working_rss_mib`: the largest "
            "sample once the first step or image was done; `slope_mib_per_h`: least-squares slope of the RSS over "
            "`window` (`window_s` seconds long, from `window_rss_start_mib` to `window_rss_end_mib`); "
            "`buffer_fill_mib_per_h`: the slope the replay buffer's fill alone gives over the same window (its "
            "arrays, `buffer_mib` in all, take memory as transitions arrive); `unexplained_mib_per_h`: the "
            "difference, the growth a leak would show. Memory, not time: the load average is recorded, not "
            "controlled.",
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
