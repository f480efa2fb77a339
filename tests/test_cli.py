"""The command line: models table, version, weights convert / info."""

from __future__ import annotations

import json

from featherface import __version__
from featherface.cli import main
from featherface.weights import sha256_file


def test_models_table_lists_counts_and_tags(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "featherface_v1" in out and "592,371" in out
    assert "featherface_v1.widerface" in out
    assert "featherface_v2" in out


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert __version__ in capsys.readouterr().out


def test_weights_convert_and_info(v1_checkpoint, tmp_path, capsys):
    out = tmp_path / "v1.safetensors"
    assert main(["weights", "convert", str(v1_checkpoint), str(out)]) == 0
    assert sha256_file(out) in capsys.readouterr().out
    assert main(["weights", "info", "featherface_v1.widerface"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == sha256_file(out)
    assert info["num_params"] == 592_371


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    assert main(["weights", "convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "does not exist" in err and "Traceback" not in err
