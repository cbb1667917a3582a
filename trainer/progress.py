"""Progress lines with an ETA for the trainer's long stages.

Lines go to stderr, at most one every few seconds, so a terminal or a CI log
shows the study moving without drowning in output.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """`1h02m`, `3m05s` or `12s`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Counts finished fits and estimates the time left from the work done.

    `work` weighs each fit (e.g. by its rows) when fits differ in cost, as in
    successive halving; the ETA is elapsed x remaining work / work done.
    """

    def __init__(
        self,
        label: str,
        total_fits: int,
        total_work: float | None = None,
        every: float = 2.0,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total_fits = total_fits
        self.total_work = float(total_work if total_work is not None else total_fits)
        self.every = every
        self.stream = stream or sys.stderr
        self.fits = 0
        self.work = 0.0
        self.started = time.perf_counter()
        self._last = 0.0
        # Advanced from a monitor thread in `tune`; the lock keeps lines whole.
        self._lock = threading.Lock()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def advance(self, work: float = 1.0, note: str = "") -> None:
        with self._lock:
            self.fits += 1
            self.work += work
            now = self.elapsed
            if now - self._last >= self.every or self.fits >= self.total_fits:
                self._last = now
                self._print(note)

    def _print(self, note: str) -> None:
        done = min(self.work / self.total_work, 1.0) if self.total_work else 1.0
        left = self.elapsed * (1.0 - done) / done if done > 0 else float("nan")
        eta = "done" if done >= 1.0 else f"about {duration(left)} left"
        text = (
            f"{self.label}: {self.fits}/{self.total_fits} fits ({done:4.0%}), "
            f"{duration(self.elapsed)} elapsed, {eta}"
        )
        if note:
            text += f" - {note}"
        print(text, file=self.stream, flush=True)
