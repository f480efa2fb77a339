"""featherface: lightweight face detectors for PyTorch — get, run, evaluate, distill, deploy."""

from featherface.compiled import compile_model
from featherface.detector import FaceDetector
from featherface.factory import create_model, featherface_v1, featherface_v2
from featherface.models import get_model_cfg, list_models, register_model
from featherface.results import Face, Faces
from featherface.training import distill, train
from featherface.version import __version__

__all__ = [
    "Face",
    "FaceDetector",
    "Faces",
    "__version__",
    "compile_model",
    "create_model",
    "distill",
    "featherface_v1",
    "featherface_v2",
    "get_model_cfg",
    "list_models",
    "register_model",
    "train",
]
