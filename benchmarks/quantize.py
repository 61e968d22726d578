"""int8 static quantisation of the exported step graph (ONNX Runtime), calibrated on the built-in samples: a
measuring tool of the speed and quality benchmarks (``--int8``), kept out of the package because int8 was slower
than float on every CPU measured (docs/results.md).

The step graph of :func:`agents.inference.onnx.export_step` is quantised with
``onnxruntime.quantization.quantize_static`` (QDQ format, int8 weights per channel, uint8 activations, min-max
ranges) in its convolutions only: quantising the instance normalisations' statistics as well made the mean
error six times larger (0.28 against 0.045 on the calibration samples). The activation ranges come from :class:`StepCalibration`: every built-in content photo
(``nst_env/data/content``) paired with a built-in style image (``nst_env/data/style``), both resized to
``side`` px, run through the float graphs for a few steps, each step's input being one calibration sample. The
style encoder stays float: it runs once per style image.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from agents.files import atomic_path
from agents.inference.onnx import (
    OnnxRunner,
    cached_export,
    export_step,
    onnx_session,
    style_encoder_path,
)
from agents.style_sac import MiniStylerPolicy
from nst_env.images import SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR, load_image, resize, scan_folder

#: Side (px) of the calibration images.
CALIBRATION_SIDE = 128
#: Steps each calibration photo is run through (each step's input is a sample).
CALIBRATION_STEPS = 3


def sample_array(path: Path, side: int) -> np.ndarray:
    """A built-in image as a ``1 x 3 x side x side`` float32 array in ``[0, 1]``.

    :param path: the image file.
    :param side: the side it is resized to.
    """
    image = resize(load_image(path), side, side)
    return (image.transpose(2, 0, 1)[None] / np.float32(255.0)).astype(np.float32)


def calibration_pairs(side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every built-in content photo with a built-in style image (in turn), as float32 arrays.

    :param side: the images' side in px.
    """
    contents, styles = scan_folder(SAMPLE_CONTENT_DIR), scan_folder(SAMPLE_STYLE_DIR)
    return [(sample_array(c, side), sample_array(styles[i % len(styles)], side)) for i, c in enumerate(contents)]


class StepCalibration(CalibrationDataReader):
    """The step graph's inputs over :func:`calibration_pairs`, ``steps`` steps each, from the float graphs.

    :param stylizer: the float graphs.
    :param side: the calibration images' side in px.
    :param steps: steps per photo.
    """

    def __init__(self, stylizer: OnnxRunner, side: int = CALIBRATION_SIDE, steps: int = CALIBRATION_STEPS) -> None:
        self.samples: list[dict[str, np.ndarray]] = []
        for moving, style in calibration_pairs(side):
            code = stylizer.encode(style)
            for _ in range(steps):
                self.samples.append({"moving": moving, **code})
                moving = stylizer(moving, code)
        self.remaining = iter(self.samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next sample, ``None`` once all were read."""
        return next(self.remaining, None)

    def rewind(self) -> None:
        """Start over from the first sample."""
        self.remaining = iter(self.samples)


def int8_difference(float_path: Path, int8_path: Path, calibration: StepCalibration) -> tuple[float, float]:
    """Mean and largest absolute difference between the int8 and the float step on the calibration samples.

    :param float_path: the float step graph.
    :param int8_path: the quantised step graph.
    :param calibration: the samples.
    """
    float_step, int8_step = onnx_session(float_path), onnx_session(int8_path)
    differences = np.concatenate(
        [np.abs(int8_step.run(None, s)[0] - float_step.run(None, s)[0]).ravel() for s in calibration.samples]
    )
    return float(differences.mean()), float(differences.max())


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Only errors from the root logger (which ONNX Runtime's quantisation tools log to) inside the block."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_int8(
    policy: MiniStylerPolicy,
    out: str | Path,
    side: int = CALIBRATION_SIDE,
    steps: int = CALIBRATION_STEPS,
    opset: int = 17,
) -> tuple[float, float]:
    """Export ``policy`` (:func:`~agents.inference.onnx.export_step`, checked against PyTorch), quantise its step
    graph to ``out`` and copy the float style encoder beside it (:func:`style_encoder_path`); both are written
    atomically.

    :param policy: an RLMiniStyler-style policy (:class:`MiniStylerPolicy`).
    :param out: the int8 step graph to write (folders are created).
    :param side: the calibration images' side in px.
    :param steps: calibration steps per photo.
    :param opset: ONNX opset version.
    :return: the mean and largest absolute difference to the float step on the calibration samples.
    :raises TypeError: a policy that is not a :class:`MiniStylerPolicy`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as folder:
        float_path = Path(folder) / "step.onnx"
        export_step(policy, float_path, opset=opset)
        calibration = StepCalibration(OnnxRunner(float_path), side, steps)
        # quiet: quantize_static advises pre-processing the graph (shape inference), which changes nothing here
        with atomic_path(out) as step_file, atomic_path(style_encoder_path(out)) as encoder_file, quiet_root_logger():
            quantize_static(
                str(float_path),
                str(step_file),
                calibration,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=["Conv"],
            )
            shutil.copyfile(style_encoder_path(float_path), encoder_file)
            return int8_difference(float_path, step_file, calibration)


def cached_int8_export(policy: MiniStylerPolicy, cache_dir: Path) -> Path:
    """The int8 step graph of ``policy`` (its float style encoder beside it) in ``cache_dir``, made there first if
    missing (:func:`~agents.inference.onnx.cached_export`, named by ONNX Runtime's version too, which quantises).

    :param policy: the policy (:class:`MiniStylerPolicy`).
    :param cache_dir: the cache folder (created).
    """
    import onnxruntime

    return cached_export(policy, cache_dir, export_int8, f"-ort{onnxruntime.__version__}-int8")
