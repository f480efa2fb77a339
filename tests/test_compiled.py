"""torch.compile path: compiled V1 / V2 reproduce the eager fused models on real images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

import featherface.compiled as compiled_module
from featherface import FaceDetector, compile_model, featherface_v2
from featherface.compiled import CompiledModel
from tests.conftest import shared_path

PHOTOS = ["2008_002470.jpg", "2009_004587.jpg", "Tom_Cruise_avp_2014_4.jpg"]


def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    image = cv2.imread(str(shared_path("data", "dlib_faces", name)))
    return cv2.resize(image, size) if size else image


def network_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    return x.permute(2, 0, 1)[None].contiguous()


def worst(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_compiled_v1_matches_eager_fused_v1(v1_model):
    """The fast deformable convs, BiFPN and attention compile to the same outputs."""
    fused = v1_model.fuse()
    model = compile_model(fused)
    x = network_input(photo("2008_002470.jpg", (320, 240)))
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        eager, compiled = fused(x), model(x)
    assert counters["stats"]["unique_graphs"] > graphs
    assert [t.shape for t in compiled] == [t.shape for t in eager]
    assert worst(eager, compiled) <= 1e-4


@pytest.fixture(scope="module")
def detectors() -> tuple[FaceDetector, FaceDetector]:
    eager = FaceDetector("featherface_v2", device="cpu")
    return eager, FaceDetector("featherface_v2", device="cpu", compile=True)


def test_compiled_detector_gives_the_eager_detections(detectors):
    eager, compiled = detectors
    frames = [photo(name, (320, 240)) for name in PHOTOS]
    results = [compiled(frame) for frame in frames]
    assert sum(len(faces) for faces in results) > 5
    for frame, faces in zip(frames, results):
        reference = eager(frame)
        assert len(faces) == len(reference)
        assert np.allclose(faces.numpy().boxes, reference.numpy().boxes, atol=0.01, rtol=0)
        assert np.allclose(faces.numpy().landmarks, reference.numpy().landmarks, atol=0.01, rtol=0)
        assert np.allclose(faces.numpy().scores, reference.numpy().scores, atol=1e-5, rtol=0)


def test_padded_batches_run_eagerly_and_match_single_calls(detectors):
    eager, compiled = detectors
    images = [photo(name) for name in PHOTOS]
    batched = compiled(images, batch_size=3)
    assert len({faces.image_size for faces in batched}) == len(images)
    for faces, reference in zip(batched, eager(images, batch_size=1)):
        assert len(faces) == len(reference) > 0
        assert np.allclose(faces.numpy().boxes, reference.numpy().boxes, atol=0.01, rtol=0)


def test_compiled_model_keeps_parameters_and_attributes():
    model = featherface_v2(pretrained=True).eval().fuse()
    wrapped = compile_model(model)
    assert isinstance(wrapped, CompiledModel)
    assert wrapped.arch == "featherface_v2" and wrapped.pretrained_cfg is model.pretrained_cfg
    assert sum(p.numel() for p in wrapped.parameters()) == sum(p.numel() for p in model.parameters())
    assert list(wrapped.state_dict()) == ["model." + key for key in model.state_dict()]


def test_bad_compile_requests_raise_clear_errors(monkeypatch, tmp_path):
    model = featherface_v2()
    with pytest.raises(TypeError, match=r"must be an nn\.Module"):
        compile_model("featherface_v2")
    with pytest.raises(ValueError, match="already compiled"):
        compile_model(compile_model(model))
    with pytest.raises(ValueError, match="applies to the torch backend"):
        FaceDetector(str(tmp_path / "model.onnx"), backend="onnxruntime", compile=True)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled_module.shutil, "which", lambda _: None)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        compile_model(model)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        FaceDetector(model, device="cpu", compile=True)
