"""Append-only journal of usage entries: the durability half of `UsageRecorder`.

A line is handed to the kernel with `os.write` (all of it: a short write is continued, a failed
one cut back off) before `append()` returns, so it survives a `kill -9` of the server. Against a
power cut, `fsync_interval_s` says when the lines reach the disk: `None` never, `0` before each
`append()` returns, otherwise group commit, one fsync on a thread of its own for every line
written in the last `fsync_interval_s` seconds. The journal is split into segments; a segment is
deleted (or, if it is the current one, truncated) once every line in it is in the database, so the
journal stays small while the server runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_SEGMENT_GLOB = "segment-*.jsonl"


def _segment_number(path: Path) -> int:
    return int(path.stem.removeprefix("segment-"))


class Journal:
    def __init__(
        self, directory: Path, max_segment_bytes: int = 4 << 20, fsync_interval_s: float | None = None
    ) -> None:
        self._dir = Path(directory)
        self._max_bytes = max_segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment = 0
        self._segment_bytes = 0
        self._pending: dict[int, int] = {}
        self._syncer = GroupSync(fsync_interval_s) if fsync_interval_s else None
        self._fsync_each = fsync_interval_s == 0

    def existing_segments(self) -> list[Path]:
        return sorted(self._dir.glob(_SEGMENT_GLOB), key=_segment_number)

    def read_lines(self, segments: list[Path], torn: list[bytes] | None = None) -> list[bytes]:
        """Complete lines of the given segments; a torn last line (killed mid-write) is left out,
        and added to `torn` when given."""
        lines: list[bytes] = []
        for path in segments:
            *complete, tail = path.read_bytes().split(b"\n")
            lines += [line for line in complete if line.strip()]
            if tail.strip() and torn is not None:
                torn.append(tail)
        return lines

    def open(self) -> None:
        """Start a fresh segment after the existing ones (call after replaying them)."""
        self._dir.mkdir(parents=True, exist_ok=True)
        existing = self.existing_segments()
        with self._lock:
            self._open_segment(_segment_number(existing[-1]) + 1 if existing else 1)

    def append(self, line: bytes) -> int:
        """Write one line; returns the segment that holds it, for `release()`."""
        with self._lock:
            if self._fd is None:
                raise ValueError("journal is not open")
            if self._segment_bytes >= self._max_bytes:
                self._open_segment(self._segment + 1)
            _write_line(self._fd, line, self._segment_bytes)
            if self._fsync_each:
                os.fsync(self._fd)
            self._segment_bytes += len(line)
            self._pending[self._segment] = self._pending.get(self._segment, 0) + 1
            if self._syncer is not None:
                self._syncer.mark_dirty(self._fd, self._segment)
            return self._segment

    def sync(self) -> None:
        """Every line appended so far on the disk, now."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def release(self, segment: int, num_lines: int) -> None:
        """`num_lines` of `segment` are in the database; drop the segment when it is all there."""
        with self._lock:
            left = self._pending[segment] - num_lines
            if left > 0:
                self._pending[segment] = left
                return
            del self._pending[segment]
            if segment == self._segment and self._fd is not None:
                os.ftruncate(self._fd, 0)
                self._segment_bytes = 0
            else:
                self._path(segment).unlink(missing_ok=True)

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._segment not in self._pending:
                self._path(self._segment).unlink(missing_ok=True)

    def _open_segment(self, number: int) -> None:
        if self._fd is not None:
            if self._syncer is not None or self._fsync_each:
                os.fsync(self._fd)  # the group syncer only ever syncs the current segment
            os.close(self._fd)
            if self._segment not in self._pending:
                self._path(self._segment).unlink(missing_ok=True)
        self._segment, self._segment_bytes = number, 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self._path(number), flags, 0o600)

    def _path(self, number: int) -> Path:
        return self._dir / f"segment-{number:08d}.jsonl"


def _write_line(fd: int, line: bytes, size: int) -> None:
    """All of `line`, through short writes; on an error, cut the file back to `size` (its length
    before), so that a half-written line never runs into the next one."""
    view = memoryview(line)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        if len(view) < len(line):
            try:
                os.ftruncate(fd, size)
            except OSError:
                logger.exception("the usage journal could not cut a half-written line")
        raise


class GroupSync:
    """Group commit: a thread that fsyncs the journal at most every `interval_s` seconds, once for
    every line written since its last fsync."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._cond = threading.Condition()
        self._dirty: tuple[int, int] | None = None  # guarded by _cond: (segment, a dup of its fd)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="usage-journal-fsync", daemon=True)
        self._thread.start()

    def mark_dirty(self, fd: int, segment: int) -> None:
        """A line went to `segment` (open as `fd`); the journal fsyncs a segment it leaves itself."""
        with self._cond:
            if self._dirty is not None and self._dirty[0] == segment:
                return
            if self._dirty is not None:
                os.close(self._dirty[1])
            self._dirty = (segment, os.dup(fd))  # the dup survives the journal closing `fd`
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._dirty is None and not self._stopped:
                    self._cond.wait()
                dirty, self._dirty = self._dirty, None
                stopped = self._stopped
            if dirty is not None:
                self._sync(dirty[1])
            if stopped:
                return
            time.sleep(self._interval_s)  # the lines written meanwhile share the next fsync

    @staticmethod
    def _sync(fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError:
            logger.exception("fsync of the usage journal failed")
        finally:
            os.close(fd)
