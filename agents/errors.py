"""The package's exceptions: what the library raises for a bad input or a failed run (the CLI turns each into one
``error: ...`` line and exit status 2, :func:`agents.cli.cli_main`).

Each is a ``ValueError`` or an ``OSError``, so code that already catches those keeps working; every message names
the input and what was expected.
"""

from __future__ import annotations


class RLNSTError(Exception):
    """Base of this package's exceptions."""


class ConfigError(RLNSTError, ValueError):
    """A run configuration that cannot be used: a hyper-parameter, flag or combination the algorithm refuses."""


class CheckpointError(RLNSTError, ValueError):
    """A run folder or checkpoint that cannot be resumed from (missing, damaged, or of another algorithm)."""


class ModelLoadError(RLNSTError, ValueError):
    """A model that is missing, corrupt, or not an actor-builder policy."""


class UnsafeModelError(ModelLoadError):
    """A model file that could only be loaded by unpickling part of it, which runs whatever code the file
    carries: refused on the inference path (the message says how to convert a trusted file)."""


class TrainingStoppedError(RLNSTError, OSError):
    """A training run stopped by the operating system (a full disk during a checkpoint save, a file that cannot be
    written): its complete checkpoints are kept, and the message says how to continue with ``--resume``."""


class DistributedError(RLNSTError, ConnectionError):
    """A distributed run whose ranks could not join or stopped answering."""


def one_line(message: object) -> str:
    """``message`` as one line (whitespace runs, newlines included, become single spaces).

    :param message: an exception or a string.
    """
    text = " ".join(str(message).split())
    return text or type(message).__name__
