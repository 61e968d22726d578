"""``python -m agents.train``: Train any of our RL algorithms on NST-v0 (:mod:`agents.cli.train`)."""

from agents.cli import run
from agents.cli.train import main

if __name__ == "__main__":
    run(main)
