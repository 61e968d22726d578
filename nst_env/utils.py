"""Device helpers of the environments: resolving ``"auto"`` to a torch device, and one torch CPU thread in a
process forked after the import (GNU OpenMP is not fork-safe)."""

from __future__ import annotations

import os

import torch

#: The process that imported this module; ``NSTEnv`` compares it with ``os.getpid()`` to notice a forked child.
_IMPORT_PID = os.getpid()


def fork_safe_torch_threads() -> None:
    """Use one torch CPU thread in a process forked after this module was imported.

    torch's CPU pool is GNU OpenMP on Linux, which is not fork-safe: a child forked after the parent ran a
    parallel region hangs in its first one (pytorch/pytorch#17199). ``gym.make_vec(..., "async")`` forks by
    default, and its workers then hung while building VGG-19. One thread per worker is also the sensible
    setting for several env processes.
    """
    if os.getpid() != _IMPORT_PID and torch.backends.openmp.is_available() and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def resolve_device(device: torch.device | str) -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
