"""Every script in examples/ runs on the shared data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

from tests.conftest import REPO, shared_path


def run_example(name: str, *args: str, cwd) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_detect_image(v1_checkpoint, tmp_path):
    image = shared_path("data", "dlib_faces", "2008_002470.jpg")
    out = run_example(
        "detect_image.py", str(image), "--checkpoint", str(v1_checkpoint), "--out", "a.jpg", cwd=tmp_path
    )
    assert "6 faces" in out
    assert cv2.imread(str(tmp_path / "a.jpg")).shape == cv2.imread(str(image)).shape


def test_align_faces(v1_checkpoint, tmp_path):
    image = shared_path("data", "dlib_faces", "2008_002470.jpg")
    out = run_example("align_faces.py", str(image), "--checkpoint", str(v1_checkpoint), cwd=tmp_path)
    crops = sorted((tmp_path / "crops").glob("*.png"))
    assert "6 aligned" in out and len(crops) == 6
    assert cv2.imread(str(crops[0])).shape == (112, 112, 3)


def write_clip(path: Path) -> Path:
    """A 3-frame 400×300 MJPG clip of real photos (two group photos, then dogs)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (400, 300))
    for name in ("2008_002470.jpg", "2009_004587.jpg", "dogs.jpg"):
        writer.write(cv2.resize(cv2.imread(str(shared_path("data", "dlib_faces", name))), (400, 300)))
    writer.release()
    return path


def test_video(v1_checkpoint, tmp_path):
    clip = write_clip(tmp_path / "clip.avi")
    out = run_example(
        "video.py", str(clip), "--checkpoint", str(v1_checkpoint), "--out", "out.avi", cwd=tmp_path
    )
    assert out.startswith("3 frames")
    capture = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_video_compiled_finds_the_same_faces(tmp_path):
    clip = write_clip(tmp_path / "clip.avi")
    args = ("video.py", str(clip), "--model", "featherface_v2", "--out")
    eager = run_example(*args, "eager.avi", cwd=tmp_path)
    compiled = run_example(*args, "compiled.avi", "--compile", cwd=tmp_path)
    assert eager.startswith("3 frames") and compiled.split(";")[0] == eager.split(";")[0]
