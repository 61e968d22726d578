"""Stylise in the browser: ``python -m agents.app`` serves a page where one click computes a photo's whole sequence
and a slider shows each step (:mod:`agents.inference.app`; controls: docs/app.md).

    python -m agents.app                      # http://127.0.0.1:7860, this machine only
    python -m agents.app --port 8000 --model runs/style_sac_NST-v0_1/model.zip

It needs the ``app`` extra (``pip install "rl-nst[app]"``: Gradio). The page binds to 127.0.0.1 unless ``--host``
says otherwise, is shared through a public Gradio link only with ``--share``, sends no analytics and fetches
nothing from the internet; uploads are capped (``--max-file-size``). Model files (``--model``, an upload, a path
typed into the page where that is allowed) are read by :func:`~agents.inference.models.load_policy`, as
``agents.stylize`` reads them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from agents.cli import cli_main, device_name, fail, int_range
from agents.inference.allocator import keep_freed_memory
from agents.inference.app import MAX_FILE_SIZE, build_app, launch_app
from agents.inference.backends import BACKENDS
from agents.inference.models import DEFAULT_MODEL
from agents.inference.onnx import CACHE_ENV
from agents.inference.sequences import ModelCache

#: Gradio's telemetry switch; the app sets it off before Gradio is imported.
ANALYTICS_ENV = "GRADIO_ANALYTICS_ENABLED"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring).

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every network of this machine)")
    p.add_argument("--port", type=int_range(1, 65535), default=None, help="port (default: the first free from 7860)")
    p.add_argument("--share", action="store_true", help="also serve the page through a public Gradio share link")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="a trained StyleSAC .zip to offer besides the shipped models (repeatable)",
    )
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, ...")
    p.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: ONNX Runtime where the model exports, else PyTorch"
    )
    p.add_argument(
        "--onnx-cache", type=Path, default=None, help=f"exported models' folder (default: ${CACHE_ENV} or ~/.cache)"
    )
    p.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload, e.g. 50mb")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only (``localhost``, ``127.0.0.0/8``, ``::1``).

    :param host: the ``--host`` argument.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.app``: load the default model (a bad ``--device`` or ``--model`` ends it here with one
    line and exit status 2), then serve the page until interrupted.

    A model path typed into the page is taken only when the page serves this machine alone (a loopback
    ``--host``, no ``--share``): elsewhere it would let others open files of this machine.

    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    os.environ[ANALYTICS_ENV] = "False"
    try:
        import gradio  # noqa: F401  (the app extra)
    except ImportError:
        fail('the app needs Gradio: pip install "rl-nst[app]"')
    for model in args.model:
        if not Path(model).is_file():
            fail(f"--model {model}: no such file (expected a StyleSAC .zip)")
    models = ModelCache(args.device, args.backend, args.onnx_cache)
    try:
        for model in [DEFAULT_MODEL, *args.model]:
            models.get(model)
    except (RuntimeError, AssertionError) as exc:  # e.g. --device cuda on a machine without CUDA
        fail(f"--device {args.device}: {exc}")
    if models.device.type == "cpu":
        keep_freed_memory()  # process-wide: this command does nothing else (agents.inference.allocator)
    page = build_app(models, extra_models=args.model, allow_paths=is_loopback(args.host) and not args.share)
    launch_app(page, args.host, args.port, args.share, args.max_file_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
