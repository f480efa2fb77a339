"""FaceDetector on real images: golden parity, batching, threads, streams, results."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch

from featherface import FaceDetector, Faces
from featherface.align import ARCFACE_TEMPLATE, similarity_transform
from tests.conftest import shared_path

SMALL = ["2008_002470.jpg", "2009_004587.jpg", "Tom_Cruise_avp_2014_4.jpg", "2008_001322.jpg"]


def dlib(name: str) -> str:
    return str(shared_path("data", "dlib_faces", name))


@pytest.fixture(scope="module")
def detector(v1_model) -> FaceDetector:
    return FaceDetector(v1_model, device="cpu")


@pytest.fixture(scope="module")
def golden_detector(v1_checkpoint) -> FaceDetector:
    return FaceDetector(
        "featherface_v1", checkpoint_path=v1_checkpoint, device="cpu", score_threshold=0.02, max_faces=100_000
    )


def match(a: Faces, b: Faces, tol: float) -> bool:
    """Same faces in the same order with boxes and landmarks within ``tol`` pixels."""
    a, b = a.numpy(), b.numpy()
    return (
        len(a) == len(b)
        and np.allclose(a.boxes, b.boxes, atol=tol, rtol=0)
        and np.allclose(a.landmarks, b.landmarks, atol=tol, rtol=0)
        and np.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
    )


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(boxes) + area(box) - inter)


def test_golden_detections_are_reproduced(golden_detector, golden):
    meta, arrays = golden
    names = list(meta)
    results = golden_detector([str(shared_path(meta[n]["source"])) for n in names], batch_size=8)
    for name, faces in zip(names, results):
        faces = faces.numpy()
        expected = arrays[f"{name}__dets"]
        assert faces.image_size == (meta[name]["height"], meta[name]["width"])
        confident, mine = expected[expected[:, 4] >= 0.5], faces.scores >= 0.5
        assert mine.sum() == len(confident) == meta[name]["num_dets_0.5"], name
        np.testing.assert_allclose(faces.boxes[mine], confident[:, :4], atol=0.5, rtol=0)
        np.testing.assert_allclose(faces.landmarks[mine].reshape(-1, 10), confident[:, 5:], atol=0.5, rtol=0)
        np.testing.assert_allclose(faces.scores[mine], confident[:, 4], atol=1e-4, rtol=0)
        assert len(faces) == meta[name]["num_dets_0.02"], name


def test_batch_of_mixed_sizes_equals_single_calls(detector):
    paths = [dlib(n) for n in SMALL]
    batched = detector(paths, batch_size=4)
    assert len({f.image_size for f in batched}) == len(paths)
    for path, faces in zip(paths, batched):
        assert match(faces, detector(path), tol=0.01)
    assert sum(len(f) for f in batched) > 5


def test_v2_batch_of_mixed_sizes_equals_single_calls():
    """V2's fused SSH and dense convs keep the padded border masked like the unfused layers."""
    detector = FaceDetector("featherface_v2", device="cpu")
    paths = [dlib(n) for n in SMALL]
    batched = detector(paths, batch_size=4)
    for path, faces in zip(paths, batched):
        assert match(faces, detector(path), tol=0.01)
    assert sum(len(f) for f in batched) > 5


def test_concurrent_threads_give_sequential_results(detector):
    paths = [dlib(n) for n in SMALL] * 2
    sequential = [detector(p) for p in paths]
    barrier = threading.Barrier(4)

    def run(path: str) -> Faces:
        barrier.wait(timeout=60) if threading.current_thread() is not threading.main_thread() else None
        return detector(path)

    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, paths[:4])) + list(pool.map(detector, paths[4:]))
    for a, b in zip(sequential, concurrent):
        assert match(a, b, tol=1e-4)


def test_every_input_kind_gives_the_same_faces(detector):
    from PIL import Image

    path = dlib("2008_002470.jpg")
    bgr = cv2.imread(path)
    reference = detector(path)
    assert len(reference) >= 3
    rgb = bgr[..., ::-1].copy()
    variants = {
        "str": detector(path),
        "bgr array": detector(bgr),
        "rgb array": detector(rgb, color="rgb"),
        "pil": detector(Image.fromarray(rgb)),
        "bgra array": detector(np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])),
        "uint16 array": detector(bgr.astype(np.uint16) * 257),
        "float array": detector(bgr.astype(np.float32) / 255.0),
        "rgb tensor": detector(torch.from_numpy(rgb).permute(2, 0, 1)),
        "bgr tensor": detector(torch.from_numpy(bgr).permute(2, 0, 1), color="bgr"),
        "float tensor": detector(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0),
    }
    for kind, faces in variants.items():
        assert match(faces, reference, tol=0.05), kind
    batch = detector(torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2))
    assert isinstance(batch, list) and all(match(f, reference, tol=0.05) for f in batch)


def test_gray_inputs_match_the_gray_photo(detector):
    from PIL import Image

    gray = cv2.cvtColor(cv2.imread(dlib("2008_002470.jpg")), cv2.COLOR_BGR2GRAY)
    reference = detector(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert len(reference) >= 2
    assert match(detector(gray), reference, tol=1e-3)
    assert match(detector(gray[..., None]), reference, tol=1e-3)
    assert match(detector(Image.fromarray(gray)), reference, tol=1e-3)
    assert match(detector(torch.from_numpy(gray)[None]), reference, tol=1e-3)


def test_exif_orientation_is_applied(detector, tmp_path):
    from PIL import Image

    rgb = cv2.imread(dlib("2008_002470.jpg"))[..., ::-1]
    upright = Image.fromarray(np.ascontiguousarray(rgb))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels on disk are rotated …
    exif = Image.Exif()
    exif[0x0112] = 6  # … and the tag says "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    upright_path = tmp_path / "upright.jpg"
    upright.save(upright_path, quality=95)
    reference = detector(str(upright_path))
    for faces in (detector(str(path)), detector(Image.open(path))):
        assert faces.image_size == reference.image_size
        assert len(faces) == len(reference) >= 2
        nearest = np.abs(faces.numpy().boxes[:, None] - reference.numpy().boxes[None]).max(-1).min(0)
        assert nearest.max() < 4.0


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((0, 480, 3), np.uint8), ValueError, r"non-empty .* got shape \(0, 480, 3\)"),
        (np.zeros((4, 4, 3, 1), np.uint8), ValueError, "H×W×3"),
        (np.zeros((8, 8, 5), np.uint8), ValueError, "got 5"),
        (np.full((8, 8, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.full((8, 8, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((8, 8, 3), 200.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.int64), TypeError, "int64"),
        (torch.zeros(2, 8, 8), ValueError, "channels first"),
        (torch.zeros(3, 0, 8), ValueError, "non-empty"),
        (torch.full((3, 8, 8), float("nan")), ValueError, "NaN"),
        ({"image": 1}, TypeError, "unsupported image type dict"),
        ([], ValueError, "empty list"),
    ],
)
def test_bad_inputs_raise_clear_errors(detector, image, error, message):
    with pytest.raises(error, match=message):
        detector(image)


def test_bad_files_raise_clear_errors(detector, tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        detector(str(tmp_path / "missing.jpg"))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="cannot decode"):
        detector(str(text))
    with pytest.raises(ValueError, match="is a directory"):
        detector(str(tmp_path))
    with pytest.raises(ValueError, match=r"^image 1: cannot decode"):
        detector([dlib("2008_002470.jpg"), str(text)])


def test_bad_settings_raise_clear_errors(v1_model):
    with pytest.raises(ValueError, match="half=True needs a CUDA device"):
        FaceDetector(v1_model, device="cpu", half=True)
    with pytest.raises(ValueError, match="score_threshold"):
        FaceDetector(v1_model, device="cpu", score_threshold=1.5)
    with pytest.raises(ValueError, match="input_size"):
        FaceDetector(v1_model, device="cpu", input_size=8)
    with pytest.raises(TypeError, match=r"registered name or an nn\.Module"):
        FaceDetector(42)
    with pytest.raises(ValueError, match="batch_size"):
        FaceDetector(v1_model, device="cpu")(np.zeros((8, 8, 3), np.uint8), batch_size=0)


def test_empty_result_is_typed(detector):
    faces = detector(dlib("dogs.jpg"))
    assert len(faces) == 0
    assert tuple(faces.boxes.shape) == (0, 4)
    assert tuple(faces.scores.shape) == (0,)
    assert tuple(faces.landmarks.shape) == (0, 5, 2)
    assert faces.to_dict()["faces"] == []
    assert faces.aligned_crops(dlib("dogs.jpg")).shape == (0, 112, 112, 3)


@pytest.mark.parametrize("model", ["featherface_v1", "featherface_v2"])
def test_black_and_dark_frames_hold_no_face(model, v1_checkpoint):
    # V2's stage-6 weights found 29 faces at score 0.58-0.62 in a black 1080p frame
    checkpoint = v1_checkpoint if model == "featherface_v1" else None
    detector = FaceDetector(model, checkpoint_path=checkpoint, device="cpu", score_threshold=0.02)
    for level in (0, 1, 2, 16):
        for shape in ((480, 640, 3), (1080, 1920, 3)):
            scores = detector(np.full(shape, level, np.uint8)).scores.numpy()
            assert scores.max(initial=0.0) < 0.25, (level, shape, scores.max(initial=0.0))


def test_faces_container_behaviour(detector):
    path = dlib("2008_002470.jpg")
    faces = detector(path)
    n = len(faces)
    assert n >= 3 and faces.boxes.dtype == torch.float32
    assert torch.all(faces.scores[:-1] >= faces.scores[1:])
    first = faces[0]
    assert first.box.shape == (4,) and first.landmarks.shape == (5, 2) and first.score >= 0.5
    assert len(faces[:2]) == 2 and isinstance(faces[:2], Faces)
    assert [f.score for f in faces] == pytest.approx(faces.scores.tolist())
    with pytest.raises(IndexError):
        faces[n]
    as_numpy = faces.numpy()
    assert isinstance(as_numpy.boxes, np.ndarray) and as_numpy.boxes.dtype == np.float32
    record = faces.to_dict()
    assert record["image_size"] == list(cv2.imread(path).shape[:2])
    assert len(record["faces"]) == n and len(record["faces"][0]["landmarks"]) == 5
    assert '"score"' in faces.to_json()
    box = first.box
    assert box[0] < first.landmarks[:, 0].mean() < box[2] and box[1] < first.landmarks[:, 1].mean() < box[3]


def test_draw_returns_an_annotated_copy(detector):
    path = dlib("2008_002470.jpg")
    image = cv2.imread(path)
    original = image.copy()
    faces = detector(image)
    drawn = faces.draw(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert np.array_equal(image, original)
    x1, y1, x2, y2 = (round(float(v)) for v in faces[0].box)
    assert not np.array_equal(
        drawn[y1 - 2 : y2 + 3, x1 - 2 : x2 + 3], image[y1 - 2 : y2 + 3, x1 - 2 : x2 + 3]
    )
    untouched = np.ones(image.shape[:2], bool)
    for face in faces:
        bx1, by1, bx2, by2 = (round(float(v)) for v in face.box)
        untouched[max(0, by1 - 30) : by2 + 30, max(0, bx1 - 30) : bx2 + 30] = False
    assert untouched.any() and np.array_equal(drawn[untouched], image[untouched])
    with pytest.raises(ValueError, match="image of"):
        faces.draw(np.zeros((10, 10, 3), np.uint8))


def test_aligned_crops_are_least_squares_similarity_warps(detector):
    image = cv2.imread(dlib("2008_002470.jpg"))
    faces = detector(image)
    crops = faces.aligned_crops(image, size=112)
    assert crops.shape == (len(faces), 112, 112, 3) and crops.dtype == np.uint8
    for landmarks, crop in zip(faces.numpy().landmarks.astype(np.float64), crops):
        # independent least-squares fit of x' = a·x − b·y + tx, y' = b·x + a·y + ty
        rows = [[x, -y, 1, 0] for x, y in landmarks] + [[y, x, 0, 1] for x, y in landmarks]
        target = np.concatenate([ARCFACE_TEMPLATE[:, 0], ARCFACE_TEMPLATE[:, 1]])
        a, b, tx, ty = np.linalg.lstsq(np.array(rows), target, rcond=None)[0]
        expected = np.array([[a, -b, tx], [b, a, ty]])
        matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
        np.testing.assert_allclose(matrix, expected, atol=1e-6)
        np.testing.assert_array_equal(crop, cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR))
        mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
        assert np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1).mean() < 10.0
    assert faces.aligned_crops(image, size=224).shape[1:3] == (224, 224)


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ARCFACE_TEMPLATE @ (scale * rotation).T + shift
    matrix = similarity_transform(ARCFACE_TEMPLATE, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_input_size_maps_results_back_to_original_pixels(v1_model):
    path = dlib("2008_002470.jpg")  # 332×500
    full = FaceDetector(v1_model, device="cpu")(path).numpy()
    small = FaceDetector(v1_model, device="cpu", input_size=400)(path).numpy()
    assert small.image_size == full.image_size
    assert len(small) == len(full) >= 5
    for box in full.boxes:  # an unmapped or wrongly scaled box would not overlap at all
        assert iou(small.boxes, box).max() > 0.5


def test_stream_is_lazy_over_iterables_and_video(detector, tmp_path):
    frames = [cv2.imread(dlib(n)) for n in SMALL[:3]]
    pulled = []

    def source():
        for frame in frames:
            pulled.append(1)
            yield frame

    stream = detector.stream(source())
    first = next(stream)
    assert len(pulled) == 1 and match(first, detector(frames[0]), tol=0.01)
    assert len(list(stream)) == 2

    video = tmp_path / "clip.avi"
    size = (320, 240)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, size)
    for frame in frames:
        writer.write(cv2.resize(frame, size))
    writer.release()
    capture = cv2.VideoCapture(str(video))
    results = list(detector.stream(capture, batch_size=2))
    capture.release()
    assert len(results) == 3 and all(r.image_size == (240, 320) for r in results)
    assert sum(len(r) for r in results) >= 2
    with pytest.raises(ValueError, match="not opened"):
        list(detector.stream(cv2.VideoCapture(str(tmp_path / "missing.avi"))))


def test_packaged_v2_detects_faces_in_a_real_photo():
    faces = FaceDetector("featherface_v2", device="cpu")(dlib("2008_002470.jpg"))
    assert len(faces) >= 4  # six people face the camera in this photo
    assert faces.scores.min() >= 0.5
