"""The usage ledger under faults: group-commit fsync, short and failed writes, corrupt journal
lines set aside, one server per data directory, requests in flight at a crash recorded as
aborted, a 503 rather than an unbilled answer, and bad rows that never block the writer."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from platform_helpers import request_record
from sqlalchemy import select
from sqlalchemy.exc import DataError

import firebox.platform.journal as journal_module
import firebox.platform.usage as usage_module
from firebox.api.app import create_app
from firebox.platform.data_dir_lock import DataDirInUseError
from firebox.platform.db import Database
from firebox.platform.journal import Journal
from firebox.platform.schema import UsageRow
from firebox.platform.services import Platform
from firebox.platform.usage import UsageRecorder, journal_line
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread, wait_until
from tests.fakes import FakeEngine

LINE = b'{"request_id":"r"}\n'


def _stored(database: Database) -> dict[str, UsageRow]:
    with database.session() as session:
        return {row.request_id: row for row in session.scalars(select(UsageRow))}


@pytest.fixture
def fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


# --- the journal ------------------------------------------------------------------------------------


def test_group_commit_fsyncs_many_lines_at_once(tmp_path: Path, fsyncs: list[int]) -> None:
    journal = Journal(tmp_path, fsync_interval_s=0.05)
    journal.open()
    for _ in range(300):
        journal.append(LINE)
    assert wait_until(lambda: len(fsyncs) >= 1, timeout=2)
    time.sleep(0.2)
    assert len(fsyncs) <= 5  # one fsync covered the lines written since the last
    journal.close()


def test_fsync_per_line_and_never(tmp_path: Path, fsyncs: list[int]) -> None:
    each = Journal(tmp_path / "each", fsync_interval_s=0)
    each.open()
    for _ in range(3):
        each.append(LINE)
    assert len(fsyncs) == 3
    never = Journal(tmp_path / "never", fsync_interval_s=None)
    never.open()
    never.append(LINE)
    time.sleep(0.1)
    assert len(fsyncs) == 3


def test_short_writes_are_continued(tmp_path: Path, monkeypatch) -> None:
    real_write = os.write
    monkeypatch.setattr(journal_module.os, "write", lambda fd, data: real_write(fd, bytes(data[:5])))
    journal = Journal(tmp_path)
    journal.open()
    lines = [journal_line(request_record(f"r{i}", user="a" * 40)) for i in range(3)]
    for line in lines:
        journal.append(line)
    assert journal.read_lines(journal.existing_segments()) == [line.rstrip(b"\n") for line in lines]


def test_a_failed_write_leaves_no_half_line(tmp_path: Path, monkeypatch) -> None:
    real_write = os.write
    journal = Journal(tmp_path)
    journal.open()
    journal.append(b"first\n")

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def disk_full_after_5_bytes(fd, data):
        monkeypatch.setattr(journal_module.os, "write", disk_full)
        return real_write(fd, bytes(data[:5]))

    monkeypatch.setattr(journal_module.os, "write", disk_full_after_5_bytes)
    with pytest.raises(OSError):
        journal.append(b"second line\n")
    monkeypatch.setattr(journal_module.os, "write", real_write)
    journal.append(b"third\n")
    assert journal.read_lines(journal.existing_segments()) == [b"first", b"third"]


# --- start-up ---------------------------------------------------------------------------------------


def test_corrupt_and_torn_lines_are_set_aside_with_a_warning(
    database: Database, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = data_dir / "usage-journal"
    journal.mkdir(parents=True)
    good = [journal_line(request_record(f"r{i}", completion_tokens=i)) for i in range(2)]
    bad = [b"{not json\n", b'{"unknown_field": 1}\n', b"[1, 2]\n"]
    (journal / "segment-00000001.jsonl").write_bytes(good[0] + b"".join(bad) + good[1] + b'{"request_id": "to')
    recorder = UsageRecorder(database, data_dir)
    with caplog.at_level(logging.WARNING, logger="firebox.platform.usage"):
        assert recorder.start() == 2  # start-up goes on
    recorder.close()
    assert set(_stored(database)) == {"r0", "r1"}
    set_aside = (data_dir / "usage-set-aside" / "journal.jsonl").read_bytes().splitlines()
    assert sorted(set_aside) == sorted([b'{"request_id": "to', *(line.rstrip(b"\n") for line in bad)])
    assert "set aside" in caplog.text


def test_two_servers_cannot_share_a_data_directory(data_dir: Path, database_url: str | None) -> None:
    first = Platform.open(data_dir, database_url)
    try:
        with pytest.raises(DataDirInUseError, match="in use by another firebox server"):
            Platform.open(data_dir, database_url)
    finally:
        first.close()
    Platform.open(data_dir, database_url).close()  # free again once the first has closed


_CRASH = """
import dataclasses, os, signal, sys
from pathlib import Path
from firebox.platform.db import Database
from firebox.platform.usage import UsageRecorder
from firebox.request_record import RequestRecord
data_dir, url = Path(sys.argv[1]), sys.argv[2] or None
recorder = UsageRecorder(Database.open(data_dir, url), data_dir, flush_interval_s=60.0)
recorder.start()
base = RequestRecord(request_id="", account_id="fireworks", key_id="k", model="m", deployment=None, endpoint="chat",
                     prompt_tokens=9, cached_tokens=0, completion_tokens=0, ttft_s=None, latency_s=0.0,
                     status_code=500, aborted=True, user=None, metadata=None, created=1_700_000_000)
for i in range(3):
    recorder.begin(dataclasses.replace(base, request_id=f"req-{i}"))
recorder.record(dataclasses.replace(base, request_id="req-0", status_code=200, aborted=False, completion_tokens=5))
os.kill(os.getpid(), signal.SIGKILL)  # req-1 and req-2 are still running
"""


def test_requests_in_flight_at_a_crash_are_recorded_as_aborted(
    database: Database, data_dir: Path, database_url: str | None
) -> None:
    child = subprocess.run([sys.executable, "-c", _CRASH, str(data_dir), database_url or ""], capture_output=True,
                           timeout=120)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    recorder = UsageRecorder(database, data_dir)
    assert recorder.start() == 3
    recorder.close()
    rows = _stored(database)
    assert (rows["req-0"].status_code, rows["req-0"].aborted, rows["req-0"].completion_tokens) == (200, False, 5)
    for request_id in ("req-1", "req-2"):
        row = rows[request_id]
        assert (row.aborted, row.status_code, row.prompt_tokens) == (True, 500, 9)
    assert os.listdir(data_dir / "usage-journal") == []


# --- the writer -------------------------------------------------------------------------------------


def test_a_bad_row_is_set_aside_and_the_rest_stored(database: Database, data_dir: Path, monkeypatch) -> None:
    real_insert = usage_module.insert_usage_records

    def refuse_bad(db, records):
        records = list(records)
        if any(r.request_id == "bad" for r in records):
            raise DataError("INSERT", {}, ValueError("value too long for type character varying(256)"))
        real_insert(db, records)

    monkeypatch.setattr(usage_module, "insert_usage_records", refuse_bad)
    recorder = UsageRecorder(database, data_dir, flush_interval_s=0.2, retry_interval_s=60)
    recorder.start()
    for request_id in ("a", "bad", "b"):
        recorder.record(request_record(request_id))
    assert wait_until(lambda: set(_stored(database)) == {"a", "b"}, timeout=10)  # never retried for a minute
    recorder.flush()
    recorder.close()
    assert b'"request_id":"bad"' in (data_dir / "usage-set-aside" / "rows.jsonl").read_bytes()
    assert not list((data_dir / "usage-journal").glob("*.jsonl"))


@pytest.mark.parametrize("fields", [{"user": "u" * 300}, {"user": "nul\x00byte"}, {"model": "m" * 300}])
def test_on_postgresql_a_row_it_refuses_never_blocks_the_writer(
    database: Database, data_dir: Path, fields: dict[str, Any]
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("SQLite stores these rows")
    recorder = UsageRecorder(database, data_dir, flush_interval_s=0.2, retry_interval_s=60)
    recorder.start()
    for record in (request_record("a"), request_record("bad", **fields), request_record("b")):
        recorder.record(record)
    assert wait_until(lambda: set(_stored(database)) == {"a", "b"}, timeout=10)
    recorder.flush()
    recorder.close()
    assert b'"request_id":"bad"' in (data_dir / "usage-set-aside" / "rows.jsonl").read_bytes()


# --- serving ------------------------------------------------------------------------------------------


class BrokenJournal:
    def __init__(self, fail_begin: bool) -> None:
        self.fail_begin = fail_begin
        self.records: list[Any] = []

    def begin(self, record) -> None:
        if self.fail_begin:
            raise OSError(errno.ENOSPC, "No space left on device")

    def record(self, record) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fail_begin", [True, False])
def test_a_503_instead_of_an_unbilled_answer(fail_begin: bool) -> None:
    engine = FakeEngine()
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    app = create_app(registry, ledger=BrokenJournal(fail_begin))
    body = {"model": engine.name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}
    with serve_in_thread(app) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 503, response.text
    assert "usage cannot be recorded" in response.json()["error"]["message"]
    assert "No space" not in response.text  # the cause is in the log
    if fail_begin:
        assert not engine.submitted  # refused before the engine saw it
