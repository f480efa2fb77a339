"""ONNX / TorchScript export, the ONNX Runtime model and the detector's onnxruntime backend on real photos."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from featherface import FaceDetector, featherface_v2
from featherface.cli import main
from featherface.export import (
    ExportCheckError,
    ExportReport,
    check_batches,
    cpu_channel_block,
    export_onnx,
    export_torchscript,
    raise_if_off,
)
from featherface.models.bifpn import max_pool_same
from featherface.models.deform import set_deform_impl
from featherface.models.padding import valid_region
from featherface.models.registry import InputCfg
from featherface.priors import valid_prior_mask
from featherface.runtime import OnnxRuntimeModel
from tests.conftest import shared_path

pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra: pip install 'featherface[onnx]'")


def dlib(name: str) -> str:
    return str(shared_path("data", "dlib_faces", name))


@pytest.fixture(scope="module")
def v1_onnx(v1_checkpoint, tmp_path_factory):
    """V1 exported once through the CLI, dynamic, checked on two real photos."""
    path = tmp_path_factory.mktemp("onnx") / "v1.onnx"
    images = [dlib("2008_002470.jpg"), dlib("bald_guys.jpg")]
    args = ["export", "onnx", "--model", "featherface_v1", "--checkpoint", str(v1_checkpoint)]
    assert main([*args, "--output", str(path), "--dynamic", "--check-images", *images]) == 0
    return path


def test_cli_export_reports_three_checked_sizes(v1_onnx, capsys):
    import onnx

    proto = onnx.load(str(v1_onnx))
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["featherface.arch"] == "featherface_v1" and metadata["featherface.weights"] == "widerface"
    ops = {node.op_type for node in proto.graph.node}
    assert "Gather" in ops and "ReduceSum" in ops  # the deformable sampling, not a plain conv


def test_onnx_v1_equals_the_torchvision_deform_model_on_real_images(v1_onnx, v1_model):
    reference = set_deform_impl(copy.deepcopy(v1_model), "torchvision")
    runtime = OnnxRuntimeModel(v1_onnx, threads=2)
    images = [cv2.imread(dlib(n)) for n in ("Tom_Cruise_avp_2014_4.jpg", "2009_004587.jpg")]
    for batch in check_batches(images, InputCfg(), ((256, 352, 1), (201, 163, 2))):
        with torch.inference_mode():
            expected, actual = reference(batch), runtime(batch)
        for e, a in zip(expected, actual):
            assert e.shape == a.shape
            assert float((e - a).abs().max()) <= 1e-3


def test_onnx_v1_reproduces_the_golden_outputs(v1_onnx, golden):
    meta, arrays = golden
    name = "dlib_tom_cruise"
    image = cv2.imread(str(shared_path(meta[name]["source"])))
    x = torch.from_numpy(image.astype(np.float32) - np.array([104, 117, 123], np.float32))
    loc, conf, landms = OnnxRuntimeModel(v1_onnx)(x.permute(2, 0, 1)[None].contiguous())
    for key, value in (("loc", loc[0]), ("conf", conf[0].softmax(-1)), ("landms", landms[0])):
        assert float(np.abs(value.numpy() - arrays[f"{name}__{key}"]).max()) <= 1e-3, key


def test_runtime_padded_batch_equals_single_image_runs(v1_onnx):
    runtime = OnnxRuntimeModel(v1_onnx)
    small = check_batches([cv2.imread(dlib("2008_001322.jpg"))], InputCfg(), ((70, 101, 1),))[0]
    large = check_batches([cv2.imread(dlib("2008_002470.jpg"))], InputCfg(), ((96, 128, 1),))[0]
    batch = torch.zeros(2, 3, 96, 128)
    batch[0], batch[1, :, :70, :101] = large[0], small[0]
    sizes = [(96, 128), (70, 101)]
    with valid_region(sizes, (96, 128)):
        padded = runtime(batch)
    keep = valid_prior_mask(sizes, (96, 128))[1]
    for joint, alone in zip(padded, runtime(small)):
        torch.testing.assert_close(joint[1][keep], alone[0])


def test_detector_onnxruntime_backend_finds_the_same_faces(v1_onnx, v1_checkpoint):
    images = [cv2.imread(dlib(n)) for n in ("2008_002470.jpg", "Tom_Cruise_avp_2014_4.jpg")]
    torch_faces = FaceDetector("featherface_v1", checkpoint_path=v1_checkpoint, device="cpu")(images)
    onnx_faces = FaceDetector(str(v1_onnx), backend="onnxruntime", device="cpu")(images)
    for a, b in zip(torch_faces, onnx_faces):
        a, b = a.numpy(), b.numpy()
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.slow
def test_torchscript_export_is_size_generic(tmp_path):
    torch.manual_seed(0)
    report = export_torchscript(featherface_v2().eval(), tmp_path / "v2.pt", check_images=[dlib("dogs.jpg")])
    assert sorted(report.max_abs_diff) == ["1x333x517", "1x480x640", "2x97x131"]
    assert max(report.max_abs_diff.values()) <= 1e-4


def test_bad_export_requests_are_explained(tmp_path, v1_onnx):
    model = featherface_v2().eval()
    with pytest.raises(ValueError, match="opset must be 13 or newer"):
        export_onnx(model, tmp_path / "a.onnx", opset=11)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg does not exist"):
        export_onnx(model, tmp_path / "b.onnx", check_images=[tmp_path / "missing.jpg"])
    report = ExportReport(tmp_path / "c.onnx", "onnx", True, 17, {"1x480x640": 2e-3, "1x333x517": 1e-5})
    with pytest.raises(ExportCheckError, match=r"differ from PyTorch by up to 0\.002"):
        raise_if_off(report, tolerance=1e-3)
    with pytest.raises(FileNotFoundError, match="featherface export onnx"):
        OnnxRuntimeModel(tmp_path / "nothing.onnx")
    with pytest.raises(ValueError, match="backend must be 'torch' or 'onnxruntime'"):
        FaceDetector(str(v1_onnx), backend="tensorrt", device="cpu")
    with pytest.raises(ValueError, match="export the checkpoint first"):
        FaceDetector(str(v1_onnx), backend="onnxruntime", device="cpu", checkpoint_path="w.pth")


class _SamePool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_same(x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("size", [(15, 20), (17, 33), (8, 9), (30, 40), (1, 1), (1, 6), (5, 2)])
def test_exported_same_pool_keeps_the_alignment_of_every_size(tmp_path, size):
    """The exported pool (``MaxPool`` SAME_UPPER, then a ``Max`` that puts the zero padding back
    on the border rows / columns read from the traced sizes) equals the eager pool at even, odd
    and one-pixel sizes; mostly negative inputs make the padding's zeros count."""
    import onnxruntime

    path = tmp_path / "pool.onnx"
    axes = {"x": {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad():
        torch.onnx.export(
            _SamePool(),
            (torch.zeros(1, 4, 30, 40),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
            opset_version=17,
        )
    x = torch.randn(2, 4, *size) - 1  # mostly negative: zero padding must win at the borders
    (actual,) = onnxruntime.InferenceSession(str(path)).run(None, {"x": x.numpy()})
    np.testing.assert_array_equal(actual, max_pool_same(x).numpy())


def test_v2_onnx_export_is_faithful_at_even_and_odd_sizes(tmp_path):
    import onnx

    model = featherface_v2(pretrained=True).eval()
    images = [dlib("2008_002470.jpg"), dlib("dogs.jpg")]
    report = export_onnx(model, tmp_path / "v2.onnx", dynamic=True, check_images=images)
    assert sorted(report.max_abs_diff) == ["1x333x517", "1x480x640", "2x97x131"]
    assert max(report.max_abs_diff.values()) <= 1e-4
    nodes = onnx.load(str(tmp_path / "v2.onnx")).graph.node
    pools = [node for node in nodes if node.op_type == "MaxPool"]
    auto_pads = [attr.s for node in pools for attr in node.attribute if attr.name == "auto_pad"]
    assert len(pools) == 4 and auto_pads == [b"SAME_UPPER"] * 4  # no size arithmetic, no Pad copy
    assert not any(node.op_type == "Pad" for node in nodes)
    assert not any(node.op_type == "ReduceMean" and "spatial" in node.name for node in nodes)


def test_cli_export_widens_the_stem_to_a_channel_block(tmp_path, capsys):
    import onnx

    path = tmp_path / "v2-block16.onnx"
    args = ["export", "onnx", "--model", "featherface_v2", "--output", str(path), "--dynamic"]
    assert main([*args, "--channel-block", "16", "--check-images", dlib("bald_guys.jpg")]) == 0
    checks = [line for line in capsys.readouterr().out.splitlines() if "max |Δ|" in line]
    assert len(checks) == 3 and all(float(line.split()[-1]) <= 1e-4 for line in checks)
    proto = onnx.load(str(path))
    weights = {tensor.name: tensor for tensor in proto.graph.initializer}
    first_conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    assert list(weights[first_conv.input[1]].dims) == [16, 3, 3, 3]
    other = tmp_path / "v2.pt"
    assert (
        main(
            [
                "export",
                "torchscript",
                "--model",
                "featherface_v2",
                "--output",
                str(other),
                "--channel-block",
                "16",
            ]
        )
        == 2
    )
    assert "--channel-block applies to ONNX export only" in capsys.readouterr().err and not other.exists()
    with pytest.raises(SystemExit):
        main([*args, "--channel-block", "0"])
    assert "positive integer or auto, got '0'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="leave fuse=True"):
        export_onnx(featherface_v2(), tmp_path / "unfused.onnx", fuse=False, channel_block=16)


@pytest.mark.parametrize(
    ("flags", "block"),
    [("fpu sse avx avx2 avx512f avx512bw", 16), ("fpu sse avx avx2 fma", None), (None, None)],
)
def test_cpu_channel_block_reads_the_cpu_flags(tmp_path, flags, block):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU avx512f\nflags\t\t: {flags}\n")
    assert cpu_channel_block(cpuinfo) == block
