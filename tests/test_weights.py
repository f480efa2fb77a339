"""Legacy conversion, strict loading and safe deserialisation."""

from __future__ import annotations

import pickle

import pytest
import torch

from featherface import create_model, featherface_v1, featherface_v2
from featherface.models import get_model_cfg
from featherface.weights import (
    WeightsError,
    convert_checkpoint,
    convert_legacy_state_dict,
    read_legacy_checkpoint,
    save_safetensors,
    sha256_file,
)


def test_conversion_is_deterministic_and_matches_the_registry(v1_checkpoint, tmp_path):
    first = convert_checkpoint(v1_checkpoint, tmp_path / "a.safetensors", "featherface_v1")
    second = convert_checkpoint(v1_checkpoint, tmp_path / "b.safetensors", "featherface_v1")
    assert first == second == sha256_file(tmp_path / "a.safetensors")
    assert first == get_model_cfg("featherface_v1").weights_cfg().sha256


def test_conversion_drops_profiler_keys_and_module_prefix(v1_checkpoint, tmp_path):
    raw = read_legacy_checkpoint(v1_checkpoint)
    assert any(k.endswith("total_ops") for k in raw)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in raw.items()}}
    legacy = tmp_path / "wrapped.pth"
    torch.save(wrapped, legacy)
    model = featherface_v1(checkpoint_path=legacy)
    reference = featherface_v1(checkpoint_path=v1_checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    converted = convert_legacy_state_dict(raw, get_model_cfg("featherface_v1").legacy_key_rules)
    assert not any(k.endswith(("total_ops", "total_params")) for k in converted)


def test_safetensors_and_legacy_loads_agree(v1_checkpoint, tmp_path):
    path = tmp_path / "v1.safetensors"
    convert_checkpoint(v1_checkpoint, path, "featherface_v1")
    a = featherface_v1(checkpoint_path=path)
    b = create_model("featherface_v1.widerface", checkpoint_path=v1_checkpoint)
    assert not a.training and not b.training
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert b.pretrained_cfg.tag == "widerface"


def test_v2_weights_into_v1_names_the_bad_keys(tmp_path):
    path = tmp_path / "v2.safetensors"
    v2_keys = set(featherface_v2().state_dict())
    v1_keys = set(featherface_v1().state_dict())
    save_safetensors(featherface_v2().state_dict(), path)
    with pytest.raises(WeightsError) as info:
        featherface_v1(checkpoint_path=path)
    message = str(info.value)
    missing, unexpected = sorted(v1_keys - v2_keys), sorted(v2_keys - v1_keys)
    assert f"missing keys: {missing[0]}" in message
    assert f"unexpected keys: {unexpected[0]}" in message
    assert f"(and {len(missing) - 8} more)" in message


def test_shape_mismatch_is_named(tmp_path):
    state = featherface_v1().state_dict()
    state["heads.class_head.0.weight"] = torch.zeros(6, 64, 1, 1)
    path = tmp_path / "bad.safetensors"
    save_safetensors(state, path)
    with pytest.raises(
        WeightsError, match=r"heads.class_head.0.weight \(6, 64, 1, 1\) vs model \(4, 64, 1, 1\)"
    ):
        featherface_v1(checkpoint_path=path)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_arbitrary_pickles_are_never_loaded(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Payload()}, handle)
    with pytest.raises(WeightsError, match="weights_only=True"):
        featherface_v1(checkpoint_path=path)
    assert "unpickled!" not in capsys.readouterr().out


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        featherface_v1(checkpoint_path=tmp_path / "nope.safetensors")
    odd = tmp_path / "weights.npz"
    odd.write_bytes(b"123")
    with pytest.raises(WeightsError, match="unsupported weights file"):
        featherface_v1(checkpoint_path=odd)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read"):
        featherface_v1(checkpoint_path=broken)


def test_v2_weights_ship_inside_the_package_and_load_offline(tmp_path):
    import os
    import subprocess
    import sys

    from featherface.weights import resolve_pretrained

    path = resolve_pretrained("featherface_v2.widerface_kd")
    assert path.is_file() and path.parent.name == "pretrained"
    assert sha256_file(path) == get_model_cfg("featherface_v2").weights_cfg().sha256
    code = (
        "import numpy as np, featherface\n"
        "model = featherface.featherface_v2(pretrained=True)\n"
        "print('tag', model.pretrained_cfg.tag, 'training', model.training)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"), HF_ENDPOINT="http://127.0.0.1:9"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "tag widerface_kd training False" in result.stdout
    assert not (tmp_path / "empty-cache").exists()
