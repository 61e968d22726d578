"""``python -m agents.stylize``: Stylise images or a video step by step (:mod:`agents.cli.stylize`)."""

from agents.cli import run
from agents.cli.stylize import main

if __name__ == "__main__":
    run(main)
