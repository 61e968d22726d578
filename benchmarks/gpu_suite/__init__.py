"""The GPU suite, ``python -m benchmarks.gpu_suite``: one unattended run of training and inference on an
accelerator (being split into modules; :mod:`benchmarks.gpu_suite.stages` holds it all for now)."""

from benchmarks.gpu_suite.stages import STAGE_TABLES, STAGES, TARGETS, StageResult, main

__all__ = ["STAGES", "STAGE_TABLES", "TARGETS", "StageResult", "main"]
