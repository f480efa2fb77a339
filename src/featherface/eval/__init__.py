"""Evaluation: the official WIDER FACE protocol and its prediction files."""

from featherface.eval.widerface import evaluate_widerface
from featherface.eval.widerface_files import (
    PredictionFileError,
    read_prediction_file,
    read_widerface_predictions,
    write_widerface_predictions,
)
from featherface.eval.widerface_gt import SETTINGS, WiderFaceGT, load_widerface_gt

__all__ = [
    "SETTINGS",
    "PredictionFileError",
    "WiderFaceGT",
    "evaluate_widerface",
    "load_widerface_gt",
    "read_prediction_file",
    "read_widerface_predictions",
    "write_widerface_predictions",
]
