"""Progress of long work on one file: bytes read against its size, the rate, records so far.

Shown two ways: a line redrawn on the terminal (stderr, only when it is one), and a log line
every `every` seconds (Airflow task logs show it; so does `-v` on the command line). When no
step is reading the file (the records are read and the suites are judging them, the tiers
are being published), the log line says so, so a long validation is never silent.

Bytes read are the read position of the file's open descriptors (`/proc/self/fdinfo`), so
every pass over the file (digest, encryption into bronze, parsing) is measured without the
readers reporting it; where there is no `/proc`, only records and elapsed time are shown.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("pipeline.progress")
MB = 1 << 20
#: how often the terminal line is redrawn
REDRAW_SECONDS = 1.0


class FileProgress:
    """Counts a file's records (called by the batch loop) and reports on a timer thread."""

    def __init__(
        self,
        name: str,
        path: Path,
        every: float,
        then: Callable[[int], None] | None = None,
    ) -> None:
        stat = path.stat()
        self.name, self.size, self.every, self.then = name, stat.st_size, every, then
        self._file = (stat.st_dev, stat.st_ino)
        self.rows = 0
        self.live = sys.stderr.isatty()
        self._stop = threading.Event()
        self._began = self._pass_began = time.monotonic()
        self._last_pos = 0

    def __call__(self, rows: int) -> None:
        self.rows = rows
        if self.then:
            self.then(rows)

    def line(self) -> str:
        """What is happening now, in one line (counts and sizes only)."""
        pos = bytes_read(self._file)
        now = time.monotonic()
        if not pos:  # no step is reading the file (or the system does not say)
            elapsed = now - self._began
            state = "validating and publishing" if self.rows else "working"
            return f"{self.name}: {self.rows:,} records read; {state} ({elapsed:.0f} s)"
        if pos < self._last_pos:  # the next pass over the file has begun
            self._pass_began = now
        self._last_pos = pos
        rate = pos / MB / max(now - self._pass_began, 1e-6)
        share = 100 * pos / self.size if self.size else 100
        return (
            f"{self.name}: read {pos / MB:,.1f} of {self.size / MB:,.1f} MB ({share:.0f}%) "
            f"at {rate:,.1f} MB/s; {self.rows:,} records"
        )

    def _run(self) -> None:
        next_log = time.monotonic() + self.every
        tick = min(self.every, REDRAW_SECONDS)
        while not self._stop.wait(tick):
            text = self.line()
            if self.live:
                print(f"\r\033[K  {text}", end="", file=sys.stderr, flush=True)
            if time.monotonic() >= next_log:
                log.info("%s", text)
                next_log += self.every

    @contextmanager
    def running(self) -> Iterator[FileProgress]:
        worker = threading.Thread(target=self._run, name="progress", daemon=True)
        worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            worker.join(timeout=5)
            if self.live:
                print("\r\033[K", end="", file=sys.stderr, flush=True)


def bytes_read(file: tuple[int, int]) -> int | None:
    """The furthest read position among this process's descriptors open on `file` (device,
    inode): 0 when none is open, None where the system does not tell."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    furthest = 0
    for fd in fds:
        try:
            st = os.stat(f"/proc/self/fd/{fd}")
            if (st.st_dev, st.st_ino) != file:
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for row in info:
                    if row.startswith("pos:"):
                        furthest = max(furthest, int(row.split()[1]))
        except (OSError, ValueError):
            continue  # closed meanwhile, or not a file
    return furthest


@contextmanager
def watch(
    name: str, path: Path, every: float, then: Callable[[int], None] | None = None
) -> Iterator[Callable[[int], None]]:
    """Report progress on `path` while the block runs; yields the record counter to pass to
    the batch loop (it calls `then` too)."""
    with FileProgress(name, path, every, then).running() as progress:
        yield progress
