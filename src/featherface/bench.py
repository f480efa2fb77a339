"""Latency harness: FeatherFace (PyTorch and ONNX Runtime) against peer face detectors on real images.

Every candidate is timed on the network call alone (no pre- or post-processing), on inputs made
from real photos with the candidate's own input convention. Timing runs in rounds — in each, every
candidate of one backend makes a block of calls — so a drift of machine load hits those rows
alike; backends take turns so that no runtime's idle threads compete with another's. Peak memory is
measured in a fresh process per candidate (largest resident set minus the set after imports).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

Runner = Callable[[], object]
#: ``(height, width)`` of the benchmark rows.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (240, 320))
#: Backend name of PyTorch rows run through ``torch.compile``; timed in turn with the eager rows.
COMPILED = "torch.compile"
PEER_FILES = {
    "YuNet-n": "yunet_n_dynamic.onnx",
    "RetinaFace-mnet0.25": "retinaface_mbnet0.25.onnx",
    "SCRFD-0.5GF": "scrfd_500m_bnkps.onnx",
    "YuNet-2023mar": "face_detection_yunet_2023mar.onnx",
}


@dataclass
class Candidate:
    """A model to time: ``build(image, (H, W), threads)`` returns a zero-argument callable."""

    name: str
    backend: str
    build: Callable[[np.ndarray, tuple[int, int], int], Runner]
    note: str = ""


@dataclass
class Result:
    """Latency of one candidate at one size: median and 90th percentile in ms over ``runs`` calls."""

    name: str
    backend: str
    height: int
    width: int
    median_ms: float
    p90_ms: float
    runs: int
    peak_mb: float | None = None
    note: str = ""


@dataclass
class Report:
    """All results plus the machine and settings they were measured with."""

    results: list[Result]
    machine: dict[str, str | int]
    settings: dict[str, int | str] = field(default_factory=dict)

    def ratio(self, slower: str, faster: str, height: int) -> float:
        """``median(slower) / median(faster)`` at the row of ``height`` (speed-up of ``faster``)."""
        rows = {(r.name, r.backend): r for r in self.results if r.height == height}
        pick = {key[0] + " " + key[1]: value for key, value in rows.items()}
        return pick[slower].median_ms / pick[faster].median_ms


def machine_info() -> dict[str, str | int]:
    """CPU model, core count and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, str | int] = {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = "not installed"
    return info


def bgr_minus_mean(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """BGR photo → ``(1, 3, H, W)`` float32 input for ``size`` ``(H, W)``, mean (104, 117, 123)
    subtracted: FeatherFace's and RetinaFace's convention."""
    resized = cv2.resize(image, (size[1], size[0])).astype(np.float32)
    return np.ascontiguousarray((resized - np.float32([104, 117, 123])).transpose(2, 0, 1)[None])


def _ort_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_runner(path: Path, prepare: Callable[[np.ndarray, tuple[int, int]], np.ndarray]):
    def build(image: np.ndarray, size: tuple[int, int], threads: int) -> Runner:
        session = _ort_session(path, threads)
        feed = {session.get_inputs()[0].name: prepare(image, size)}
        return lambda: session.run(None, feed)

    return build


def _torch_runner(model_factory: Callable[[], torch.nn.Module]):
    def build(image: np.ndarray, size: tuple[int, int], threads: int) -> Runner:
        torch.set_num_threads(threads)
        model = model_factory()
        x = torch.from_numpy(bgr_minus_mean(image, size))

        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run

    return build


def _padded_to_32(prepare: Callable[[np.ndarray, tuple[int, int]], np.ndarray]):
    """Zero-pad bottom / right to a multiple of 32 (YuNet-n's FPN needs it, as its own demo does)."""

    def padded(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        x = prepare(image, size)
        height, width = (-(-s // 32) * 32 for s in size)
        return np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (0, height - size[0]), (0, width - size[1]))))

    return padded


def _bgr_raw(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    resized = cv2.resize(image, (size[1], size[0])).astype(np.float32)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None])


def _rgb_scrfd(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    resized = cv2.resize(image, (size[1], size[0]))[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((resized - 127.5) / 128.0).transpose(2, 0, 1)[None])


def _opencv_yunet(path: Path):
    def build(image: np.ndarray, size: tuple[int, int], threads: int) -> Runner:
        cv2.setNumThreads(threads)
        detector = cv2.FaceDetectorYN.create(str(path), "", (size[1], size[0]), 0.6, 0.3, 5000)
        frame = cv2.resize(image, (size[1], size[0]))
        return lambda: detector.detect(frame)

    return build


def peer_candidates(peers_dir: str | os.PathLike) -> list[Candidate]:
    """The peer detectors found in ``peers_dir`` (files named as in :data:`PEER_FILES`)."""
    peers_dir = Path(peers_dir)
    found = {name: peers_dir / file for name, file in PEER_FILES.items() if (peers_dir / file).is_file()}
    candidates = []
    if "YuNet-n" in found:
        prepare = _padded_to_32(_bgr_raw)
        candidates.append(
            Candidate("YuNet-n", "onnxruntime", _ort_runner(found["YuNet-n"], prepare), "pad to ×32")
        )
    if "RetinaFace-mnet0.25" in found:
        build = _ort_runner(found["RetinaFace-mnet0.25"], bgr_minus_mean)
        candidates.append(Candidate("RetinaFace-mnet0.25", "onnxruntime", build))
    if "SCRFD-0.5GF" in found:
        candidates.append(
            Candidate("SCRFD-0.5GF", "onnxruntime", _ort_runner(found["SCRFD-0.5GF"], _rgb_scrfd))
        )
    if "YuNet-2023mar" in found:
        candidates.append(
            Candidate("YuNet-2023mar", "opencv", _opencv_yunet(found["YuNet-2023mar"]), "cv2.FaceDetectorYN")
        )
    return candidates


def _registry_sha256(arch: str) -> str:
    from featherface.models.registry import get_model_cfg

    cfg = get_model_cfg(arch).weights_cfg()
    if cfg is None or cfg.sha256 is None:
        raise ValueError(f"{arch} has no pretrained weights with a sha256 to benchmark")
    return cfg.sha256


@functools.cache
def _source_digest() -> str:
    """sha256 over featherface's own Python files: the code that writes an export (read once per
    process)."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def onnx_export_path(
    onnx_dir: str | os.PathLike, arch: str, weights_sha256: str, channel_block: int | None = None
) -> Path:
    """Where the benchmark keeps the export of ``arch`` with the weights of that sha256 (and stem
    ``channel_block``): the name carries the featherface version, a digest of its code and the
    weights, so other code or weights export anew."""
    from featherface.version import __version__

    block = f"-block{channel_block}" if channel_block is not None else ""
    name = f"{arch}-{__version__}-{_source_digest()[:8]}-{weights_sha256[:12]}{block}.onnx"
    return Path(onnx_dir) / name


def featherface_candidates(
    checkpoint: str | os.PathLike | None, onnx_dir: str | os.PathLike, compiled: bool = True
) -> list[Candidate]:
    """V1 original-style, V1 fast and V2, in PyTorch eager and (fast / V2) through ``torch.compile``
    (unless ``compiled`` is false) and ONNX Runtime.

    ``checkpoint`` loads V1's weights (the pretrained ones when ``None``); V2 runs with its
    shipped pretrained weights (trained weights, not an initialisation: activations and their
    rounding are the ones users get). The ONNX files are exported into ``onnx_dir`` once per
    featherface code and weights (see :func:`onnx_export_path`), with the stem widened to this
    CPU's channel block (see :func:`~featherface.export.cpu_channel_block`); models are built only
    when a candidate is built.
    """
    from featherface.compiled import compile_model
    from featherface.export import cpu_channel_block, export_onnx
    from featherface.factory import create_model
    from featherface.models.deform import set_deform_impl
    from featherface.weights import sha256_file

    def v1() -> torch.nn.Module:
        return create_model(
            "featherface_v1", pretrained=checkpoint is None, checkpoint_path=checkpoint
        ).eval()

    def v2() -> torch.nn.Module:
        return create_model("featherface_v2", pretrained=True).eval()

    v1_digest = sha256_file(checkpoint) if checkpoint is not None else _registry_sha256("featherface_v1")
    block = cpu_channel_block()
    paths = {
        "v1": onnx_export_path(onnx_dir, "featherface_v1", v1_digest, block),
        "v2": onnx_export_path(onnx_dir, "featherface_v2", _registry_sha256("featherface_v2"), block),
    }
    for name, factory in (("v1", v1), ("v2", v2)):
        if not paths[name].is_file():
            export_onnx(factory(), paths[name], dynamic=True, channel_block=block)
    export_note = "fused export" + (f", stem widened to {block} channels" if block is not None else "")
    candidates = [
        Candidate(
            "FeatherFace-V1 original",
            "pytorch",
            _torch_runner(lambda: set_deform_impl(v1(), "torchvision")),
            "torchvision DCN, unfused",
        ),
        Candidate(
            "FeatherFace-V1 fast",
            "pytorch",
            _torch_runner(lambda: v1().fuse()),
            "fast DCN, fused, channels-last",
        ),
        Candidate(
            "FeatherFace-V1 fast", "onnxruntime", _ort_runner(paths["v1"], bgr_minus_mean), export_note
        ),
        Candidate(
            "FeatherFace-V1 fast",
            COMPILED,
            _torch_runner(lambda: compile_model(v1().fuse())),
            "as eager, compiled for the input size",
        ),
        Candidate("FeatherFace-V2", "pytorch", _torch_runner(lambda: v2().fuse()), "fused, channels-last"),
        Candidate(
            "FeatherFace-V2",
            COMPILED,
            _torch_runner(lambda: compile_model(v2().fuse())),
            "as eager, compiled for the input size",
        ),
        Candidate("FeatherFace-V2", "onnxruntime", _ort_runner(paths["v2"], bgr_minus_mean), export_note),
    ]
    return [c for c in candidates if compiled or c.backend != COMPILED]


def time_interleaved(runners: list[Runner], runs: int, warmup: int, blocks: int = 3) -> list[list[float]]:
    """Milliseconds per call of each runner: ``warmup`` untimed calls each, then ``runs`` timed calls.

    The timed calls come in ``blocks`` rounds; in each round every runner makes one untimed call
    (which wakes its runtime's threads while the previous runtime's go idle) and then its share of
    timed calls back to back. Slow drifts of machine load thus reach every runner alike.
    """
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    per_block = -(-runs // blocks)
    while len(times[0]) < runs:
        count = min(per_block, runs - len(times[0]))
        for i, run in enumerate(runners):
            run()
            for _ in range(count):
                start = time.perf_counter()
                run()
                times[i].append((time.perf_counter() - start) * 1e3)
    return times


def _runtime(backend: str) -> str:
    """The runtime whose threads run ``backend`` (compiled PyTorch rows share eager PyTorch's)."""
    return "pytorch" if backend == COMPILED else backend


def run_benchmark(
    candidates: list[Candidate],
    image: np.ndarray,
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES,
    runs: int = 30,
    warmup: int = 5,
    threads: int = 2,
) -> list[Result]:
    """Time every candidate at every size; results in candidate order within each size.

    Candidates of one runtime (eager and compiled PyTorch share one) are interleaved with each
    other; runtimes run one after another (their sessions closed in between), so one runtime's
    idle worker threads never compete with another's timed call.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    results = []
    for size in sizes:
        timed: dict[int, Result] = {}
        for runtime in dict.fromkeys(_runtime(c.backend) for c in candidates):
            group = [i for i, c in enumerate(candidates) if _runtime(c.backend) == runtime]
            runners = [candidates[i].build(image, size, threads) for i in group]
            for i, times in zip(group, time_interleaved(runners, runs, warmup)):
                median, p90 = np.percentile(times, [50, 90])
                c = candidates[i]
                timed[i] = Result(c.name, c.backend, *size, float(median), float(p90), runs, note=c.note)
            del runners
        results += [timed[i] for i in range(len(candidates))]
    return results


def _memory_mb(field_name: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB; ``ru_maxrss`` where /proc is absent.

    ``VmHWM`` belongs to the process image, unlike ``ru_maxrss``, which Linux carries over from the
    parent of a forked-and-executed child.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(candidate: Candidate, image: np.ndarray, size: tuple[int, int], threads: int) -> float:
    """Peak resident-set growth in MB of building and running ``candidate`` (call in a fresh process:
    the process's peak must not have been reached before)."""
    before = _memory_mb("VmRSS")
    run = candidate.build(image, size, threads)
    for _ in range(3):
        run()
    return _memory_mb("VmHWM") - before


def measure_memory(results: list[Result], spec: dict, image_path: str, threads: int) -> None:
    """Fill ``peak_mb`` of each result, each candidate in its own process (``spec``: how to build them)."""
    for result in results:
        probe = {"image": image_path, "threads": threads, "name": result.name, "backend": result.backend}
        args = json.dumps({**spec, **probe, "size": [result.height, result.width]})
        out = subprocess.run(
            [sys.executable, "-m", "featherface.bench", args], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            result.peak_mb = float(out.stdout.strip().splitlines()[-1])


def build_candidates(spec: dict) -> list[Candidate]:
    """Candidates from a spec ``{"checkpoint", "onnx_dir", "peers", "compile"}`` (``None`` entries are
    skipped; ``"compile": False`` leaves out the ``torch.compile`` rows)."""
    candidates = featherface_candidates(spec.get("checkpoint"), spec["onnx_dir"], spec.get("compile", True))
    if spec.get("peers"):
        candidates += peer_candidates(spec["peers"])
    return candidates


def format_table(report: Report) -> str:
    """The results as a Markdown table."""
    lines = [
        "| model | backend | input | median ms | p90 ms | peak MB | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in report.results:
        peak = f"{r.peak_mb:.0f}" if r.peak_mb is not None else "–"
        cells = [
            r.name,
            r.backend,
            f"{r.width}×{r.height}",
            f"{r.median_ms:.1f}",
            f"{r.p90_ms:.1f}",
            peak,
            r.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(report: Report, path: str | os.PathLike) -> None:
    """Write the report (machine, settings, results) as JSON."""
    payload = {
        "machine": report.machine,
        "settings": report.settings,
        "results": [asdict(r) for r in report.results],
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Report:
    """A report written by :func:`write_json`."""
    payload = json.loads(Path(path).read_text())
    return Report([Result(**r) for r in payload["results"]], payload["machine"], payload.get("settings", {}))


def default_onnx_dir() -> Path:
    """Where exported benchmark models are cached between runs."""
    return Path(tempfile.gettempdir()) / "featherface-bench"


def _probe_main(argument: str) -> None:
    spec = json.loads(argument)
    torch.set_num_threads(spec["threads"])
    image = cv2.imread(spec["image"])
    for candidate in build_candidates(spec):
        if (candidate.name, candidate.backend) == (spec["name"], spec["backend"]):
            print(f"{memory_probe(candidate, image, tuple(spec['size']), spec['threads']):.1f}")
            return
    raise SystemExit(f"no candidate {spec['name']} ({spec['backend']})")


if __name__ == "__main__":
    _probe_main(sys.argv[1])
