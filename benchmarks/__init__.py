"""Benchmarks of the step-wise style transfer agents: quality, speed, training throughput, RL algorithms.

Run them as modules from the repository root, e.g. ``python -m benchmarks.quality``; each writes Markdown, CSV,
JSON and PNG files under ``benchmarks/results/`` (see ``benchmarks/README.md``). The quality metrics live in
:mod:`benchmarks.metrics` for reuse.
"""
