"""The latency harness: peers fed with their own input conventions find faces; reports are well formed."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import featherface
from featherface import bench
from featherface.cli import main
from tests.conftest import shared_path

pytest.importorskip(
    "onnxruntime", reason="the benchmark needs the onnx extra: pip install 'featherface[onnx]'"
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.imread(str(shared_path("data", "dlib_faces", "2008_002470.jpg")))  # a group photo


def face_score(name: str, outputs: object) -> float:
    """Best face confidence a peer reports, read with that peer's output convention."""
    if name == "RetinaFace-mnet0.25":
        return float(outputs[1][..., 1].max())  # this export already applies the softmax
    if name == "SCRFD-0.5GF":
        return float(max(o.max() for o in outputs[:3]))
    if name == "YuNet-n":
        cls, obj = outputs[:3], outputs[3:6]
        return float(max(np.sqrt(c * o).max() for c, o in zip(cls, obj)))
    faces = outputs[1]  # cv2.FaceDetectorYN: (retval, faces (N, 15) with the score last)
    return float(faces[:, -1].max()) if faces is not None else 0.0


@pytest.mark.parametrize("size", [(480, 640), (240, 320)])
def test_every_peer_finds_the_face_with_its_input_convention(photo, size):
    candidates = bench.peer_candidates(shared_path("peers"))
    assert [c.name for c in candidates] == list(bench.PEER_FILES)
    for candidate in candidates:
        assert face_score(candidate.name, candidate.build(photo, size, 2)()) > 0.8, candidate.name


def test_run_benchmark_times_each_candidate_per_size(photo, tmp_path):
    torch.manual_seed(0)
    v2 = bench.Candidate("V2", "pytorch", bench._torch_runner(lambda: bench_model()), "fused")
    peers = bench.peer_candidates(shared_path("peers"))[1:2]
    results = bench.run_benchmark([v2, *peers], photo, sizes=((96, 128), (64, 96)), runs=3, warmup=1)
    assert [(r.name, r.height) for r in results] == [
        ("V2", 96),
        (peers[0].name, 96),
        ("V2", 64),
        (peers[0].name, 64),
    ]
    assert all(0 < r.median_ms <= r.p90_ms and r.runs == 3 for r in results)
    report = bench.Report(results, bench.machine_info())
    assert report.ratio("V2 pytorch", "V2 pytorch", 96) == 1.0
    table = bench.format_table(report)
    assert table.count("\n") == len(results) + 1 and "128×96" in table
    bench.write_json(report, tmp_path / "report.json")
    assert bench.read_json(tmp_path / "report.json").results == results


def bench_model() -> torch.nn.Module:
    from featherface import featherface_v2

    return featherface_v2().eval().fuse()


def test_bad_runs_are_refused(photo):
    with pytest.raises(ValueError, match="runs must be"):
        bench.run_benchmark([], photo, runs=0)


def test_cli_benchmark_refuses_an_unreadable_image(tmp_path, capsys):
    assert main(["benchmark", "--image", str(tmp_path / "none.jpg"), "--no-memory"]) == 2
    assert "none.jpg does not exist or is not an image" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_benchmark_writes_json(tmp_path, v1_checkpoint, capsys):
    out = tmp_path / "bench.json"
    image = str(shared_path("data", "dlib_faces", "2008_002470.jpg"))
    args = ["benchmark", "--image", image, "--checkpoint", str(v1_checkpoint), "--sizes", "128x96"]
    status = main(
        [
            *args,
            "--runs",
            "2",
            "--warmup",
            "0",
            "--onnx-dir",
            str(tmp_path),
            "--json",
            str(out),
            "--no-memory",
        ]
    )
    assert status == 0
    payload = json.loads(out.read_text())
    names = {(r["name"], r["backend"]) for r in payload["results"]}
    assert ("FeatherFace-V1 original", "pytorch") in names and ("FeatherFace-V2", "onnxruntime") in names
    assert ("FeatherFace-V1 fast", "torch.compile") in names and ("FeatherFace-V2", "torch.compile") in names
    assert payload["machine"]["cores"] >= 1 and "128×96" in capsys.readouterr().out


def test_onnx_exports_are_kept_per_version_and_weights(tmp_path, v1_checkpoint):
    from featherface.weights import sha256_file

    path = bench.onnx_export_path(tmp_path, "featherface_v1", sha256_file(v1_checkpoint))
    assert path.parent == tmp_path and featherface.__version__ in path.name
    assert path == bench.onnx_export_path(tmp_path, "featherface_v1", sha256_file(v1_checkpoint))
    assert path != bench.onnx_export_path(tmp_path, "featherface_v1", "0" * 64)
    assert path != bench.onnx_export_path(tmp_path, "featherface_v2", sha256_file(v1_checkpoint))
    widened = bench.onnx_export_path(tmp_path, "featherface_v1", sha256_file(v1_checkpoint), 16)
    assert widened != path and widened.name.endswith("-block16.onnx")
