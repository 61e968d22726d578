"""The GPU suite: one unattended run that shows training and inference on an accelerator.

    python -m benchmarks.gpu_suite --minutes 7                            # on a CUDA machine
    python -m benchmarks.gpu_suite --device cpu --minutes 1 --image-size 32 --skip tests   # dry run on a CPU

:mod:`.cli`: the command line and the order of the stages; :mod:`.runner`: child processes under time caps
and the test stage; :mod:`.stages`: machine, training throughput, env throughput, stylisation speed;
:mod:`.finetune`: the fine-tune and its held-out evaluation; :mod:`.report`: tables, targets and figure. README:
"GPU suite".
"""

from benchmarks.gpu_suite.cli import STAGE_FUNCTIONS, main
from benchmarks.gpu_suite.report import STAGE_TABLES, TARGETS, write_reports
from benchmarks.gpu_suite.runner import STAGES, StageResult

__all__ = ["STAGES", "STAGE_FUNCTIONS", "STAGE_TABLES", "TARGETS", "StageResult", "main", "write_reports"]
