"""``python -m benchmarks.gpu_suite``: the suite's command line (also each stage's child process)."""

import sys

from benchmarks.gpu_suite.cli import main

sys.exit(main())
