"""The allocator setting behind fast CPU inference: freed memory is kept for reuse, and given back on demand.

Each check runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest

from agents.inference.allocator import keep_freed_memory
from agents.inference.models import load_policy
from agents.inference.runners import TorchRunner, stylize_sequence
from nst_env.images import load_image, resize, resolve_sample

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")

#: Prints the resident memory (MB) kept after freeing a 256 MB tensor, then after release_freed_memory.
RESIDENT_AFTER_FREE = """
import sys, psutil, torch
from agents.inference.allocator import keep_freed_memory, release_freed_memory
process = psutil.Process()
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = process.memory_info().rss
tensor = torch.ones(64 * 2**20)  # 256 MB, touched
del tensor
kept = process.memory_info().rss - before
release_freed_memory()
print(kept / 2**20, (process.memory_info().rss - before) / 2**20)
"""


def resident_after_free(mode: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", RESIDENT_AFTER_FREE, mode], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    kept, released = map(float, out.split())
    return kept, released


def test_keep_freed_memory_keeps_a_freed_tensor_until_released() -> None:
    kept, released = resident_after_free("keep")
    assert kept > 200, "the freed 256 MB should stay resident for the next allocations"
    assert released < 50, "release_freed_memory should give it back to the OS"


def test_default_allocator_gives_a_large_freed_tensor_back_at_once() -> None:
    kept, _ = resident_after_free("default")
    assert kept < 50


def test_torch_runner_output_does_not_depend_on_reusing_memory() -> None:
    photo = resize(load_image(resolve_sample("chelsea")), 96, 64)
    painting = resize(load_image(resolve_sample("starry_night")), 64, 64)
    policy = load_policy("rlministyler", "cpu")
    plain = stylize_sequence(TorchRunner(policy), photo, painting, steps=2)
    keep_freed_memory()
    reused = stylize_sequence(TorchRunner(policy), photo, painting, steps=2)
    assert all(np.array_equal(a, b) for a, b in zip(plain, reused, strict=True))
