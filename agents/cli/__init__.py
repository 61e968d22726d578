"""The command-line layer: argument types, and the one place where an exception becomes ``error: ...`` and exit 2.

Every ``main(argv)`` of :mod:`agents.cli` and :mod:`benchmarks` is wrapped by :func:`cli_main`: a bad input (a
missing, unreadable or incompatible file, a value out of range, an unknown hyper-parameter), which the library
reports by raising (:mod:`agents.errors`), ends the command with one line ``error: ...`` on stderr naming the
input and what was expected, and exit status 2 (argparse's own usage errors exit with 2 too), never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import zipfile
from collections.abc import Callable
from typing import NoReturn, TypeVar

import torch

from agents.errors import one_line

T = TypeVar("T")

#: Exception types that mean "bad input" when they reach a command's top level: files that are missing,
#: unreadable or of the wrong kind (``OSError``; ``ValueError``, which :class:`~nst_env.images.ImageReadError`,
#: :class:`~agents.errors.ModelLoadError` and :class:`~nst_env.video.VideoReadError` subclass; a corrupt zip),
#: values the code refuses (``ValueError``, ``TypeError`` from a constructor given an unexpected argument) and
#: inputs too large for the memory at hand.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    EOFError,
    zipfile.BadZipFile,
    MemoryError,
    torch.cuda.OutOfMemoryError,
)


class UsageError(SystemExit):
    """Exit status 2 for a bad input; ``str()`` is the one-line message (printed by :func:`fail`).

    :param message: what was wrong and what was expected.
    """

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(message: object) -> NoReturn:
    """Print ``error: <message>`` on one line to stderr and exit with status 2 (:class:`UsageError`).

    :param message: what was wrong and what was expected (an exception's text is used as is).
    """
    text = one_line(message)
    print(f"error: {text}", file=sys.stderr)
    raise UsageError(text)


def cli_main(func: Callable[[list[str] | None], T]) -> Callable[[list[str] | None], T]:
    """Wrap a command's ``main(argv)`` so that bad input ends it with one line and exit status 2.

    :data:`INPUT_ERRORS` and ``SystemExit("message")`` (a string: the older way the commands reported errors,
    which would exit with status 1) become :func:`fail`; argparse's usage errors, :class:`UsageError`,
    ``KeyboardInterrupt`` and integer exit codes pass unchanged.

    :param func: the command's ``main``, taking the argument list (``None``: ``sys.argv[1:]``).
    """

    @functools.wraps(func)
    def main(argv: list[str] | None = None) -> T:
        try:
            return func(argv)
        except UsageError:
            raise
        except SystemExit as exc:
            if isinstance(exc.code, str):
                fail(exc.code)
            raise
        except INPUT_ERRORS as exc:
            fail(exc)

    return main


def run(main: Callable[[], int]) -> NoReturn:
    """Run a command's ``main()`` as the program and exit with its status (the ``__main__`` of ``python -m``).

    :param main: the command's ``main`` (wrapped by :func:`cli_main`).
    """
    sys.exit(main())


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (``high=None``: no upper bound).

    :param low: the smallest value accepted.
    :param high: the largest value accepted.
    """

    def parse(text: str) -> int:
        expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def int_range_or_none(low: int, high: int | None = None) -> Callable[[str], int | None]:
    """An argparse ``type``: ``0`` or ``none`` (an option's "off": ``None``), or an integer in ``[low, high]``
    (``high=None``: no upper bound).

    :param low: the smallest integer accepted besides 0.
    :param high: the largest value accepted.
    """
    in_range = int_range(low, high)

    def parse(text: str) -> int | None:
        if text.strip().lower() == "none":
            return None
        try:
            return None if int(text) == 0 else in_range(text)
        except (ValueError, argparse.ArgumentTypeError):
            expected = f">= {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected 0, none or an integer {expected}, got {text!r}") from None

    parse.__name__ = "int"
    return parse


def float_range(low: float, high: float | None = None, low_inclusive: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float above ``low`` (or at it, with ``low_inclusive``) and at most ``high``.

    :param low: the lower bound.
    :param high: the largest value accepted (``None``: no upper bound).
    :param low_inclusive: accept ``low`` itself.
    """

    def parse(text: str) -> float:
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        expected = f"a number {bound}" + ("" if high is None else f" and <= {high:g}")
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        below = value < low if low_inclusive else value <= low
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def device_name(text: str) -> str:
    """An argparse ``type``: ``auto`` or a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...; not
    ``meta``, whose tensors hold no data).

    :param text: the argument.
    """
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected auto or a torch device such as cpu, cuda, cuda:1; got {text!r}"
        ) from None
    if device.type == "meta":  # a meta tensor holds no data: the first copy to the host failed with a traceback
        raise argparse.ArgumentTypeError(f"expected a device that computes (cpu, cuda, cuda:1, ...), got {text!r}")
    return text
