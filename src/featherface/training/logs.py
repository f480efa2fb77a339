"""The training log: ``log.jsonl``, one JSON object per line, flushed as it is written."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

LOG_FILE = "log.jsonl"


def _epoch_of(line: str) -> float:
    """The epoch of a log line; blank or torn lines (from a crash mid-write) count as infinitely late."""
    try:
        return float(json.loads(line).get("epoch", 0))
    except (json.JSONDecodeError, AttributeError):
        return float("inf")


class JsonlLog:
    """Appends records to ``path``. Step records carry ``kind: "step"``, epoch summaries ``kind: "epoch"``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, object]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(dict(record)) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (work lost by an interruption, about to be redone)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if _epoch_of(line) <= epoch]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)


def read_log(path: str | os.PathLike) -> list[dict[str, object]]:
    """All records of a ``log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
