"""`UsageRecorder`: one usage row per request, durable at once, written to SQL in batches.

`record()` runs on the event loop: it appends the `RequestRecord` as a JSON line to the journal
(see `journal.py`) and queues it. A writer thread inserts queued records in batches, off the event
loop. Inserts
are idempotent by `request_id`, so replaying the journal after a crash never counts a request twice.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from firebox.platform.db import Database
from firebox.platform.journal import Journal
from firebox.platform.schema import UsageRow
from firebox.request_record import RequestRecord

logger = logging.getLogger(__name__)
_STOP = object()


def journal_line(record: RequestRecord) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":")).encode() + b"\n"


def record_from_journal_line(line: bytes) -> RequestRecord:
    return RequestRecord(**json.loads(line))


def usage_columns(record: RequestRecord) -> dict[str, Any]:
    """Values by column name of `usage_records`."""
    columns = asdict(record)
    del columns["finish_reason"]
    columns["end_user"] = columns.pop("user")
    columns["created"] = datetime.fromtimestamp(record.created, UTC).replace(tzinfo=None)
    return columns


def insert_usage_records(database: Database, records: Iterable[RequestRecord]) -> None:
    """Insert, skipping request ids already stored (ON CONFLICT DO NOTHING)."""
    by_id = {record.request_id: usage_columns(record) for record in records}
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
        records = [record_from_journal_line(line) for line in self._journal.read_lines(segments)]
        for start in range(0, len(records), self._max_batch):
            insert_usage_records(self._db, records[start:start + self._max_batch])
        for path in segments:
            path.unlink()
        self._journal.open()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        if records:
            logger.info("replayed %d usage records from the journal", len(records))
        return len(records)

    def record(self, record: RequestRecord) -> None:
        """Durable (against a process kill) when it returns; the SQL insert follows in a batch."""
        if self._thread is None:
            raise ValueError("UsageRecorder.start() was not called")
        segment = self._journal.append(journal_line(record))
        self._queue.put((segment, record))

    def flush(self) -> None:
        """Block until every recorded request is in the database."""
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

    def _next_batch(self) -> tuple[list[tuple[int, RequestRecord]], bool]:
        """Wait for one record, then gather more for up to `flush_interval_s`."""
        batch: list[tuple[int, RequestRecord]] = []
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

    def _write(self, batch: list[tuple[int, RequestRecord]]) -> None:
        while True:
            try:
                insert_usage_records(self._db, (record for _, record in batch))
                break
            except Exception:  # the journal keeps the records; retry until the database is back
                logger.exception("writing %d usage records failed", len(batch))
                if self._closing:
                    return  # left in the journal for the next start
                time.sleep(self._retry_interval_s)
        per_segment: dict[int, int] = {}
        for segment, _ in batch:
            per_segment[segment] = per_segment.get(segment, 0) + 1
        for segment, count in per_segment.items():
            self._journal.release(segment, count)
