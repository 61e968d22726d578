"""``python -m agents.export_weights``: Write a trained model as a weights folder or a safetensors file (:mod:`agents.cli.export_weights`)."""

from agents.cli import run
from agents.cli.export_weights import main

if __name__ == "__main__":
    run(main)
