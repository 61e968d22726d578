"""``python -m agents.app``: Stylise in the browser, a slider over the steps (:mod:`agents.cli.app`)."""

from agents.cli import run
from agents.cli.app import main

if __name__ == "__main__":
    run(main)
