"""``python -m agents.train_sac``: Train StyleSAC on NST-v0 (:mod:`agents.cli.train_sac`)."""

from agents.cli import run
from agents.cli.train_sac import main

if __name__ == "__main__":
    run(main)
