"""The C library's memory allocator, tuned for CPU inference (glibc only; elsewhere these do nothing).

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold (a few MB: one
``16 x 512 x 512`` float32 activation is 16 MB) with a fresh ``mmap`` and unmaps it when the tensor is freed, so
the next such tensor page-faults all its memory in again. A stylisation step allocates and frees dozens of these
(``python -m benchmarks.speed --default-allocator`` measures the difference; docs/results.md). ONNX Runtime avoids
them with its own memory arena.

- :func:`keep_freed_memory`: from now on, this process keeps freed blocks and hands them out again
  (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``). The resident memory then stays near its peak
  until :func:`release_freed_memory`. ``agents.stylize`` calls it on the CPU (process-wide, so the library leaves it to the command).
- :func:`release_freed_memory`: give the freed memory back to the OS now (``malloc_trim(0)``), e.g. before
  measuring a call's peak resident memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Freed memory at the top of the heap that glibc keeps before giving it back unasked.
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc's; musl, macOS and Windows lack them)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep the memory freed by this process for its next allocations (idempotent, process-wide).

    :return: whether the allocator was changed (``False`` where the C library is not glibc).
    """
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the OS now (glibc's ``malloc_trim(0)``).

    :return: whether any memory was given back (``False`` where the C library is not glibc).
    """
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))
