"""One server per data directory: an exclusive `flock` on `<data dir>/firebox.lock`, held while
the platform is open. Two servers appending to the same usage journal and replaying each other's
segments would count requests twice or lose them; the second one stops at start with
`DataDirInUseError`. The kernel drops the lock when the process dies, however it dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "firebox.lock"


class DataDirInUseError(RuntimeError):
    """Another running server holds the data directory."""


class DataDirLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock `data_dir` for this process; DataDirInUseError if another process holds it."""
        path = Path(data_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"the data directory {data_dir} is in use by another firebox server (pid {holder}); stop that "
                "server, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
