"""``python -m agents.export_onnx``: Export a model's stylisation step to ONNX (:mod:`agents.cli.export_onnx`)."""

from agents.cli import run
from agents.cli.export_onnx import main

if __name__ == "__main__":
    run(main)
