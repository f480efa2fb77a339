"""Registry behaviour: names, tags, patterns, duplicates and helpful errors."""

from __future__ import annotations

import pytest

from featherface import create_model, list_models, register_model
from featherface.models import ModelCfg, WeightsCfg, build_featherface_v2, get_model_cfg


def test_list_models_with_patterns_and_pretrained():
    assert list_models() == ["featherface_v1", "featherface_v2"]
    assert list_models("*v1") == ["featherface_v1"]
    assert list_models("retina*") == []
    assert "featherface_v1.widerface" in list_models("featherface*", pretrained=True)
    assert list_models("featherface_v1", pretrained=True) == ["featherface_v1.widerface"]


def test_arch_and_arch_tag_resolve_to_the_same_architecture():
    assert get_model_cfg("featherface_v1") is get_model_cfg("featherface_v1.widerface")
    model = create_model("featherface_v1")
    assert model.pretrained_cfg.tag == "widerface"
    assert model.pretrained_cfg.input.mean == (104.0, 117.0, 123.0)
    assert model.pretrained_cfg.priors.steps == (8, 16, 32)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'featherface_v2', 'featherface_v1'"):
        create_model("featherface_v3")
    with pytest.raises(ValueError, match=r"featherface_v1\.widerface"):
        create_model("featherface_v1.widerfase")
    with pytest.raises(ValueError, match="list_models"):
        create_model("yolo")
    with pytest.raises(TypeError, match="model name must be a string"):
        create_model(3)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelCfg("featherface_v1", build_featherface_v2, 1, "dup"))


def test_weights_config_must_be_consistent():
    weights = WeightsCfg(tag="a", num_params=1, license="MIT", source="test")
    with pytest.raises(ValueError, match="carry tag"):
        register_model(ModelCfg("test_arch_mismatch", build_featherface_v2, 1, "x", weights={"b": weights}))
    with pytest.raises(ValueError, match="default tag"):
        register_model(ModelCfg("test_arch_default", build_featherface_v2, 1, "x", default_tag="zzz"))
    with pytest.raises(ValueError, match="cannot contain"):
        register_model(ModelCfg("bad.name", build_featherface_v2, 1, "x"))


def test_every_weights_config_is_complete():
    for arch in list_models():
        for tag, cfg in get_model_cfg(arch).weights.items():
            assert cfg.tag == tag
            assert cfg.hf_hub_id or cfg.package_file
            assert cfg.revision and len(cfg.sha256) == 64
            assert cfg.num_params == get_model_cfg(arch).num_params
            assert cfg.license and cfg.source
            for bench in cfg.metrics.values():
                assert "protocol" in bench
