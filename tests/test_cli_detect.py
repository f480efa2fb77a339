"""``featherface detect`` over files, folders and globs, with a broken file in the mix."""

from __future__ import annotations

import json
import shutil

import cv2

from featherface.cli import main
from tests.conftest import shared_path


def test_detect_files_folders_and_globs(v1_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    for name in ("2008_002470.jpg", "dogs.jpg"):
        shutil.copy(shared_path("data", "dlib_faces", name), photos / name)
    shutil.copy(shared_path("data", "dlib_faces", "2009_004587.jpg"), photos / "nested" / "b.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    single = shared_path("data", "dlib_faces", "Tom_Cruise_avp_2014_4.jpg")
    out, record = tmp_path / "annotated", tmp_path / "faces.json"
    status = main(
        ["detect", str(photos), str(single), str(photos / "*.jpg"), "--checkpoint", str(v1_checkpoint),
         "--out", str(out), "--json", str(record), "--device", "cpu", "--batch-size", "2"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 1  # the broken file is reported, the rest are processed
    assert captured.err.count("broken.jpg: error: cannot decode") == 1
    faces = json.loads(record.read_text())
    assert len(faces) == 4  # 3 readable photos (the glob repeats them) + the single file
    counts = {path.rsplit("/", 1)[-1]: len(entry["faces"]) for path, entry in faces.items()}
    assert counts["dogs.jpg"] == 0 and counts["2008_002470.jpg"] >= 3 and counts["b.jpg"] >= 1
    assert counts["Tom_Cruise_avp_2014_4.jpg"] == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert written == ["2008_002470.jpg", "Tom_Cruise_avp_2014_4.jpg", "dogs.jpg", "nested/b.jpg"]
    assert (
        cv2.imread(str(out / "nested" / "b.jpg")).shape == cv2.imread(str(photos / "nested" / "b.jpg")).shape
    )


def test_detect_reports_missing_inputs(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nothing.jpg")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "*.png")]) == 2
    assert "no files match" in capsys.readouterr().err
