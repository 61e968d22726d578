"""Files written whole or not at all: a killed or failed writer leaves either the complete file or the old one."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` only once complete.

    The temporary file lies in the same folder (``.<stem>.partial-<pid><suffix>``: hidden, same suffix, so
    writers that choose the format by the file ending still work, and no ``<stem>*<suffix>`` pattern of the
    real files matches it). When the block ends normally it is flushed to disk and renamed over ``path``
    (:func:`os.replace`, atomic); when it raises, it is removed. A process killed in between leaves the old
    ``path`` untouched (and a stray hidden ``.partial`` file).

    :param path: the file to write (its folder must exist).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the leftovers of writes that a killed process did not finish (:func:`atomic_path`) in ``folder``;
    those of processes still running are left alone.

    :param folder: the folder to clean (missing: nothing to do).
    :return: the files removed.
    """
    folder = Path(folder)
    stray = []
    for path in sorted(folder.glob(".*.partial-*")) if folder.is_dir() else []:
        match = re.search(r"\.partial-(\d+)", path.name)
        if match and not psutil.pid_exists(int(match.group(1))):
            path.unlink(missing_ok=True)
            stray.append(path)
    return stray
