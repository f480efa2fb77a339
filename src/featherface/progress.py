"""A dependency-free progress bar for long loops (written to stderr)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """Wrap an iterable and redraw ``desc [####----] 12/40 3.1 it/s`` as it is consumed.

    Redraws at most every ``interval`` seconds; on a non-terminal stream only the final line is
    written. ``postfix`` (a short string) can be updated while iterating.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        desc: str = "",
        stream: TextIO | None = None,
        interval: float = 0.2,
        disable: bool = False,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = desc
        self.stream = stream or sys.stderr
        self.interval = interval
        self.disable = disable
        self.postfix = ""
        self.count = 0
        self._start = self._last = 0.0
        self._live = not disable and getattr(self.stream, "isatty", lambda: False)()

    def _line(self) -> str:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = f"{self.count / elapsed:.1f} it/s"
        if self.total:
            filled = int(20 * self.count / self.total)
            bar = f"[{'#' * filled}{'-' * (20 - filled)}] {self.count}/{self.total}"
        else:
            bar = f"{self.count}"
        return " ".join(part for part in (self.desc, bar, rate, self.postfix) if part)

    def _draw(self, final: bool = False) -> None:
        if self.disable or not (self._live or final):
            return
        self.stream.write(("\r" if self._live else "") + self._line() + ("\n" if final else ""))
        self.stream.flush()

    def __iter__(self) -> Iterator[T]:
        self._start = self._last = time.perf_counter()
        for item in self.iterable:
            yield item
            self.count += 1
            now = time.perf_counter()
            if now - self._last >= self.interval:
                self._last = now
                self._draw()
        self._draw(final=True)
