"""`UsageRecorder`: one usage row per request, durable at once, written to SQL in batches.

`record()` runs on the event loop: it appends a JSON line to the journal (see `journal.py`) and
queues the entry. A writer thread inserts queued entries in batches, off the event loop. Inserts
are idempotent by `request_id`, so replaying the journal after a crash never counts a request twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from firebox.platform.db import Database
from firebox.platform.journal import Journal
from firebox.platform.schema import UsageRow
from firebox.platform.usage_entry import UsageEntry

logger = logging.getLogger(__name__)
_STOP = object()


def insert_usage_entries(database: Database, entries: Iterable[UsageEntry]) -> None:
    """Insert, skipping request ids already stored (ON CONFLICT DO NOTHING)."""
    by_id = {entry.request_id: entry.to_columns() for entry in entries}
    if not by_id:
        return
    table = UsageRow.__table__
    with database.session() as session:
        if database.dialect in ("sqlite", "postgresql"):
            dialect_insert = _dialect_insert(database.dialect)
            statement = dialect_insert(table).values(list(by_id.values()))
            session.execute(statement.on_conflict_do_nothing(index_elements=["request_id"]))
            return
        stored = set(session.scalars(select(UsageRow.request_id).where(UsageRow.request_id.in_(by_id))))
        rows = [row for request_id, row in by_id.items() if request_id not in stored]
        if rows:
            session.execute(table.insert(), rows)


def _dialect_insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


class UsageRecorder:
    """Call `start()` once at start-up (replays the journal), `record()` per finished request and
    `close()` at shutdown (flushes what is queued)."""

    def __init__(self, database: Database, data_dir: Path, *, max_batch: int = 500,
                 flush_interval_s: float = 0.05, retry_interval_s: float = 1.0) -> None:
        self._db = database
        self._journal = Journal(Path(data_dir) / "usage-journal")
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max_batch = max_batch
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> int:
        """Replay journal lines left by a previous process; returns how many were read."""
        segments = self._journal.existing_segments()
        entries = [UsageEntry.from_json_line(line) for line in self._journal.read_lines(segments)]
        for start in range(0, len(entries), self._max_batch):
            insert_usage_entries(self._db, entries[start:start + self._max_batch])
        for path in segments:
            path.unlink()
        self._journal.open()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        if entries:
            logger.info("replayed %d usage records from the journal", len(entries))
        return len(entries)

    def record(self, record: Any) -> UsageEntry:
        """Durable (against a process kill) when it returns; the SQL insert follows in a batch."""
        if self._thread is None:
            raise ValueError("UsageRecorder.start() was not called")
        entry = record if isinstance(record, UsageEntry) else UsageEntry.from_record(record)
        segment = self._journal.append(entry.to_json_line())
        self._queue.put((segment, entry))
        return entry

    def flush(self) -> None:
        """Block until every recorded entry is in the database."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is None:
            return
        self._closing = True
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None
        self._journal.close()

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                self._write(batch)
            for _ in range(len(batch) + stop):
                self._queue.task_done()
            if stop:
                return

    def _next_batch(self) -> tuple[list[tuple[int, UsageEntry]], bool]:
        """Wait for one entry, then gather more for up to `flush_interval_s`."""
        batch: list[tuple[int, UsageEntry]] = []
        item = self._queue.get()
        deadline = time.monotonic() + self._flush_interval_s
        while item is not _STOP:
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            remaining = deadline - time.monotonic()
            try:  # past the deadline, still take what is already queued
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _write(self, batch: list[tuple[int, UsageEntry]]) -> None:
        while True:
            try:
                insert_usage_entries(self._db, (entry for _, entry in batch))
                break
            except Exception:  # the journal keeps the entries; retry until the database is back
                logger.exception("writing %d usage records failed", len(batch))
                if self._closing:
                    return  # left in the journal for the next start
                time.sleep(self._retry_interval_s)
        per_segment: dict[int, int] = {}
        for segment, _ in batch:
            per_segment[segment] = per_segment.get(segment, 0) + 1
        for segment, count in per_segment.items():
            self._journal.release(segment, count)
