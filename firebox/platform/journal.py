"""Append-only journal of usage entries: the durability half of `UsageRecorder`.

A line is handed to the kernel with `os.write` before `record()` returns, so it survives a
`kill -9` of the server (not a power cut: there is no fsync on the request path). The journal is
split into segments; a segment is deleted (or, if it is the current one, truncated) once every line
in it is in the database, so the journal stays small while the server runs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_SEGMENT_GLOB = "segment-*.jsonl"


def _segment_number(path: Path) -> int:
    return int(path.stem.removeprefix("segment-"))


class Journal:
    def __init__(self, directory: Path, max_segment_bytes: int = 4 << 20) -> None:
        self._dir = Path(directory)
        self._max_bytes = max_segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment = 0
        self._segment_bytes = 0
        self._pending: dict[int, int] = {}

    def existing_segments(self) -> list[Path]:
        return sorted(self._dir.glob(_SEGMENT_GLOB), key=_segment_number)

    def read_lines(self, segments: list[Path]) -> list[bytes]:
        """Complete lines of the given segments; a torn last line (killed mid-write) is dropped."""
        lines: list[bytes] = []
        for path in segments:
            lines += [line for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]
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
            os.write(self._fd, line)
            self._segment_bytes += len(line)
            self._pending[self._segment] = self._pending.get(self._segment, 0) + 1
            return self._segment

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
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._segment not in self._pending:
                self._path(self._segment).unlink(missing_ok=True)

    def _open_segment(self, number: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            if self._segment not in self._pending:
                self._path(self._segment).unlink(missing_ok=True)
        self._segment, self._segment_bytes = number, 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._fd = os.open(self._path(number), flags, 0o600)

    def _path(self, number: int) -> Path:
        return self._dir / f"segment-{number:08d}.jsonl"
