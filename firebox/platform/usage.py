"""`UsageRecorder`: one usage row per request, durable at once, written to SQL in batches.

`begin()` runs when a request is admitted, on the event loop: it journals the request's record as
it would stand if the server died now (aborted, status 500), and raises if the journal cannot be
written, so that the request is refused rather than served unbilled. `record()` journals the
final record (see `journal.py`) and queues it; a writer thread inserts queued records in batches,
off the event loop. Inserts are idempotent by `request_id`, so replaying the journal after a crash
never counts a request twice; a request begun and never recorded is replayed as its begin record.
Journal lines that do not parse, and rows the database refuses (a row error, not an outage), are
set aside in `usage-set-aside/` with a warning instead of stopping start-up or the writer.
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
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from firebox.platform.db import Database
from firebox.platform.journal import Journal
from firebox.platform.schema import UsageRow
from firebox.request_record import RequestRecord

logger = logging.getLogger(__name__)
_STOP = object()


def journal_line(record: RequestRecord, *, is_begin: bool = False) -> bytes:
    fields = {**asdict(record), "begin": True} if is_begin else asdict(record)
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def parse_journal_line(line: bytes) -> tuple[RequestRecord, bool]:
    """The record and whether it is a begin line; ValueError or TypeError if it does not parse."""
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    is_begin = bool(fields.pop("begin", False))
    return RequestRecord(**fields), is_begin


def record_from_journal_line(line: bytes) -> RequestRecord:
    return parse_journal_line(line)[0]


def is_row_error(exc: BaseException) -> bool:
    """The database refused these rows (bad data), as opposed to being unreachable."""
    if isinstance(exc, DataError | IntegrityError | ValueError | TypeError):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)  # failed before sending


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

    def __init__(self, database: Database, data_dir: Path, *, max_batch: int = 500, flush_interval_s: float = 0.05,
                 retry_interval_s: float = 1.0, fsync_interval_s: float | None = None) -> None:
        self._db = database
        self._journal = Journal(Path(data_dir) / "usage-journal", fsync_interval_s=fsync_interval_s)
        self._set_aside_dir = Path(data_dir) / "usage-set-aside"
        self._begun: dict[str, int] = {}  # request id -> the journal segment of its begin line
        self._queue: queue.Queue[Any] = queue.Queue()
        self._max_batch = max_batch
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> int:
        """Replay journal lines left by a previous process; returns how many records were read.
        Requests begun and never recorded (in flight at a crash) are stored as aborted."""
        segments = self._journal.existing_segments()
        records, num_in_flight = self._replayed_records(segments)
        for start in range(0, len(records), self._max_batch):
            self._insert_or_set_aside(records[start:start + self._max_batch])
        for path in segments:
            path.unlink()
        self._journal.open()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        if records:
            logger.info("replayed %d usage records from the journal (%d of requests in flight at the last stop, "
                        "recorded as aborted)", len(records), num_in_flight)  # fmt: skip
        return len(records)

    def begin(self, record: RequestRecord) -> None:
        """Journal `record` (the request as it stands if the server dies before `record()`);
        raises OSError if the journal cannot be written: the caller refuses the request."""
        if self._thread is None:
            raise ValueError("UsageRecorder.start() was not called")
        self._begun[record.request_id] = self._journal.append(journal_line(record, is_begin=True))

    def record(self, record: RequestRecord) -> None:
        """Durable (against a process kill) when it returns; the SQL insert follows in a batch."""
        if self._thread is None:
            raise ValueError("UsageRecorder.start() was not called")
        segments = [self._journal.append(journal_line(record))]
        if (begun := self._begun.pop(record.request_id, None)) is not None:
            segments.append(begun)
        self._queue.put((segments, record))

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

    def _next_batch(self) -> tuple[list[tuple[list[int], RequestRecord]], bool]:
        """Wait for one record, then gather more for up to `flush_interval_s`."""
        batch: list[tuple[list[int], RequestRecord]] = []
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

    def _write(self, batch: list[tuple[list[int], RequestRecord]]) -> None:
        while True:
            try:
                self._insert_or_set_aside([record for _, record in batch])
                break
            except Exception:  # the journal keeps the records; retry until the database is back
                logger.exception("writing %d usage records failed", len(batch))
                if self._closing:
                    return  # left in the journal for the next start
                time.sleep(self._retry_interval_s)
        per_segment: dict[int, int] = {}
        for segments, _ in batch:
            for segment in segments:
                per_segment[segment] = per_segment.get(segment, 0) + 1
        for segment, count in per_segment.items():
            self._journal.release(segment, count)

    def _insert_or_set_aside(self, records: list[RequestRecord]) -> None:
        """Insert; if the database refuses the batch's data, insert row by row and set aside the
        rows it refuses, so that one bad row never blocks the writer. An outage raises."""
        try:
            insert_usage_records(self._db, records)
            return
        except Exception as exc:
            if not is_row_error(exc):
                raise
        for record in records:
            try:
                insert_usage_records(self._db, [record])
            except Exception as exc:
                if not is_row_error(exc):
                    raise
                self._set_aside("rows.jsonl", [journal_line(record).rstrip(b"\n")], f"the database refused it: {exc}")

    def _replayed_records(self, segments: list[Path]) -> tuple[list[RequestRecord], int]:
        """Final records, then the begin records of requests that never got one; lines that do
        not parse (torn, corrupt) are set aside."""
        bad: list[bytes] = []  # torn last lines, then lines that do not parse
        finals: dict[str, RequestRecord] = {}
        begun: dict[str, RequestRecord] = {}
        for line in self._journal.read_lines(segments, bad):
            try:
                record, is_begin = parse_journal_line(line)
            except (ValueError, TypeError):
                bad.append(line)
                continue
            (begun if is_begin else finals)[record.request_id] = record
        if bad:
            self._set_aside("journal.jsonl", bad, "torn or corrupt journal lines")
        in_flight = [record for request_id, record in begun.items() if request_id not in finals]
        return [*finals.values(), *in_flight], len(in_flight)

    def _set_aside(self, name: str, lines: list[bytes], why: str) -> None:
        self._set_aside_dir.mkdir(parents=True, exist_ok=True)
        path = self._set_aside_dir / name
        with path.open("ab") as file:
            file.write(b"".join(line + b"\n" for line in lines))
        logger.warning("usage: %d line(s) set aside in %s (%s)", len(lines), path, why)
