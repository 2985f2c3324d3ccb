"""UsageRecorder: batching off the event loop, journal replay, and no loss on kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from platform_helpers import request_record
from sqlalchemy import func, select

import firebox.platform.usage as usage_module
from firebox.platform.db import Database
from firebox.platform.schema import UsageRow
from firebox.platform.usage import UsageRecorder, insert_usage_records, journal_line, record_from_journal_line
from firebox.request_record import RequestRecord


def _record(request_id: str, **fields: Any) -> RequestRecord:
    """A chat completion with every field set."""
    full = {"key_id": "k1", "model": "accounts/fireworks/models/tiny", "endpoint": "chat.completions",
            "prompt_tokens": 10, "cached_tokens": 4, "completion_tokens": 7, "ttft_s": 0.05, "latency_s": 0.5,
            "user": "end-user-1", "created": 1_700_000_000}  # fmt: skip
    return request_record(request_id, **{**full, **fields})


def _stored(database: Database) -> list[UsageRow]:
    with database.session() as session:
        return list(session.scalars(select(UsageRow).order_by(UsageRow.request_id)))


def _count(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(UsageRow))


def test_record_maps_every_field(database: Database, data_dir: Path) -> None:
    recorder = UsageRecorder(database, data_dir)
    recorder.start()
    recorder.record(_record("r1", metadata={"team": "a"}, aborted=True, deployment="d1"))
    recorder.record(request_record("r2", model="m", status_code=400, latency_s=0.1))
    recorder.close()
    first, second = _stored(database)
    assert (first.key_id, first.model, first.deployment, first.endpoint) == (
        "k1", "accounts/fireworks/models/tiny", "d1", "chat.completions")
    assert (first.prompt_tokens, first.cached_tokens, first.completion_tokens) == (10, 4, 7)
    assert (first.ttft_s, first.latency_s, first.status_code, first.aborted) == (0.05, 0.5, 200, True)
    assert (first.end_user, first.request_metadata) == ("end-user-1", {"team": "a"})
    assert first.created.year == 2023
    assert (second.account_id, second.status_code, second.latency_s, second.ttft_s) == ("fireworks", 400, 0.1, None)


def test_writes_are_batched_off_the_caller(database: Database, data_dir: Path, monkeypatch) -> None:
    batches: list[int] = []
    release = threading.Event()
    real_insert = usage_module.insert_usage_records

    def slow_insert(db, records):
        records = list(records)
        batches.append(len(records))
        release.wait(10)  # holds the writer on its first batch while more records arrive
        real_insert(db, records)

    monkeypatch.setattr(usage_module, "insert_usage_records", slow_insert)
    recorder = UsageRecorder(database, data_dir, flush_interval_s=0.0)
    recorder.start()
    for i in range(40):
        recorder.record(_record(f"r{i:02d}"))  # returns at once although the writer is stuck
    release.set()
    recorder.flush()
    assert sum(batches) == 40
    assert len(batches) <= 3  # the records queued behind the stuck batch went in together
    assert _count(database) == 40
    recorder.close()
    assert not list((data_dir / "usage-journal").glob("*.jsonl"))  # all in the DB: journal gone


def test_insert_is_idempotent_by_request_id(database: Database) -> None:
    records = [_record(f"r{i}") for i in range(3)]
    insert_usage_records(database, records[:2])
    insert_usage_records(database, records + records)
    assert _count(database) == 3


def test_start_replays_journal_and_skips_torn_line(database: Database, data_dir: Path) -> None:
    journal = data_dir / "usage-journal"
    journal.mkdir(parents=True)
    lines = [journal_line(_record(f"r{i}")) for i in range(3)]
    insert_usage_records(database, [record_from_journal_line(lines[0])])  # already stored
    (journal / "segment-00000001.jsonl").write_bytes(b"".join(lines) + b'{"request_id": "torn')
    recorder = UsageRecorder(database, data_dir)
    assert recorder.start() == 3
    recorder.close()
    assert [row.request_id for row in _stored(database)] == ["r0", "r1", "r2"]
    assert not list(journal.glob("*.jsonl"))


_CHILD = """
import dataclasses, os, signal, sys
from pathlib import Path
from firebox.platform.db import Database
from firebox.platform.usage import UsageRecorder
from firebox.request_record import RequestRecord
data_dir, url, count = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
database = Database.open(data_dir, url)
# The writer would wait a minute before its first insert: only the journal can save the records.
recorder = UsageRecorder(database, data_dir, flush_interval_s=60.0, max_batch=10**6)
recorder.start()
base = RequestRecord(request_id="", account_id="fireworks", key_id=None, model="m", deployment=None, endpoint="",
                     prompt_tokens=1, cached_tokens=0, completion_tokens=0, ttft_s=None, latency_s=0.0,
                     status_code=200, aborted=False, user=None, metadata=None, created=1_700_000_000)
for i in range(count):
    recorder.record(dataclasses.replace(base, request_id=f"req-{i}", completion_tokens=i))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_no_record_is_lost_on_kill_9(database: Database, data_dir: Path, database_url: str | None) -> None:
    count = 200
    child = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir), database_url or "", str(count)],
                           capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert _count(database) < count  # the database alone did not have them
    recorder = UsageRecorder(database, data_dir)
    recorder.start()
    recorder.close()
    rows = _stored(database)
    assert len(rows) == count
    assert sum(row.completion_tokens for row in rows) == sum(range(count))
    assert os.listdir(data_dir / "usage-journal") == []


def test_journal_rotates_and_drops_segments_once_stored(tmp_path: Path) -> None:
    from firebox.platform.journal import Journal

    journal = Journal(tmp_path, max_segment_bytes=20)
    journal.open()
    segments = [journal.append(b"0123456789\n") for _ in range(5)]
    assert segments == [1, 1, 2, 2, 3]
    assert sorted(p.name for p in journal.existing_segments()) == [
        "segment-00000001.jsonl", "segment-00000002.jsonl", "segment-00000003.jsonl"]
    journal.release(1, 1)
    assert (tmp_path / "segment-00000001.jsonl").exists()  # one line of it is not stored yet
    journal.release(1, 1)
    journal.release(3, 1)  # the current segment is emptied in place, not deleted
    assert [p.name for p in journal.existing_segments()] == ["segment-00000002.jsonl", "segment-00000003.jsonl"]
    assert (tmp_path / "segment-00000003.jsonl").stat().st_size == 0
    assert journal.read_lines(journal.existing_segments()) == [b"0123456789", b"0123456789"]
    journal.close()
    assert [p.name for p in journal.existing_segments()] == ["segment-00000002.jsonl"]  # kept for replay
