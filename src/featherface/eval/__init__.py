"""Evaluation: the official WIDER FACE protocol and its prediction files."""

from featherface.eval.predict import WIDERFACE_DETECTOR_SETTINGS, predict_widerface, xyxy_to_widerface
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
    "WIDERFACE_DETECTOR_SETTINGS",
    "PredictionFileError",
    "WiderFaceGT",
    "evaluate_widerface",
    "load_widerface_gt",
    "predict_widerface",
    "read_prediction_file",
    "read_widerface_predictions",
    "write_widerface_predictions",
    "xyxy_to_widerface",
]
