"""Pretrained weights through the Hugging Face Hub API, against a fake Hub on 127.0.0.1.

Each load runs in a fresh interpreter so that ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE``
take effect exactly as they would for a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featherface.models import get_model_cfg
from featherface.weights import convert_checkpoint
from tests.fake_hub import FakeHub

V1 = get_model_cfg("featherface_v1").weights_cfg("widerface")

LOAD_AND_RUN = """
import torch, featherface
model = featherface.featherface_v1(pretrained=True)
torch.manual_seed(0)
with torch.inference_mode():
    loc, conf, landms = model(torch.randn(1, 3, 64, 64) * 50)
print("checksum", round(float(conf.softmax(-1)[..., 1].sum()), 3))
"""


def run_python(code: str, cache: Path, endpoint: str, offline: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def converted_v1(v1_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    convert_checkpoint(v1_checkpoint, path, "featherface_v1")
    return path


@pytest.fixture(scope="module")
def reference_checksum(converted_v1) -> str:
    import torch

    from featherface import featherface_v1

    model = featherface_v1(checkpoint_path=converted_v1)
    torch.manual_seed(0)
    with torch.inference_mode():
        _, conf, _ = model(torch.randn(1, 3, 64, 64) * 50)
    return f"checksum {round(float(conf.softmax(-1)[..., 1].sum()), 3)}"


def test_download_verify_load_then_offline(converted_v1, reference_checksum, tmp_path):
    cache = tmp_path / "hub"
    with FakeHub() as hub:
        hub.serve(V1.hf_hub_id, V1.revision, V1.filename, converted_v1)
        first = run_python(LOAD_AND_RUN, cache, hub.endpoint)
        assert first.returncode == 0, first.stderr
        assert reference_checksum in first.stdout
        assert ("GET", f"/{V1.hf_hub_id}/resolve/{V1.revision}/{V1.filename}") in hub.requests
        assert all("/api/" not in path for _, path in hub.requests), hub.requests
    # server stopped: the cached copy serves an offline load
    second = run_python(LOAD_AND_RUN, cache, hub.endpoint, offline=True)
    assert second.returncode == 0, second.stderr
    assert reference_checksum in second.stdout


def test_tampered_download_fails_the_sha256_check(converted_v1, tmp_path):
    data = bytearray(converted_v1.read_bytes())
    data[-1] ^= 0xFF
    with FakeHub() as hub:
        hub.serve(V1.hf_hub_id, V1.revision, V1.filename, bytes(data))
        result = run_python(LOAD_AND_RUN, tmp_path / "hub", hub.endpoint)
    assert result.returncode != 0
    assert "WeightsIntegrityError" in result.stderr
    assert V1.sha256 in result.stderr
    assert "checksum" not in result.stdout


def test_offline_with_nothing_cached_explains_the_fix(tmp_path):
    result = run_python(LOAD_AND_RUN, tmp_path / "empty", "http://127.0.0.1:9", offline=True)
    assert result.returncode != 0
    assert "featherface weights import" in result.stderr
    assert V1.hf_hub_id in result.stderr


def test_weights_import_then_offline_load(v1_checkpoint, reference_checksum, tmp_path):
    cache = tmp_path / "hub"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "featherface",
            "weights",
            "import",
            str(v1_checkpoint),
            "--model",
            "featherface_v1.widerface",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr
    result = run_python(LOAD_AND_RUN, cache, "http://127.0.0.1:9", offline=True)
    assert result.returncode == 0, result.stderr
    assert reference_checksum in result.stdout


def test_import_refuses_weights_that_are_not_the_published_ones(tmp_path):
    import torch

    from featherface import featherface_v1
    from featherface.weights import WeightsIntegrityError, import_to_hub_cache, save_safetensors

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_safetensors(featherface_v1().state_dict(), other)
    with pytest.raises(WeightsIntegrityError, match="not the published weights"):
        import_to_hub_cache(other, "featherface_v1.widerface", cache_dir=tmp_path / "hub")
    assert not list((tmp_path / "hub").rglob("model.safetensors"))
