"""Chaos: `kill -9` of the engine process under load. Every in-flight stream ends with an error
event (no pid, no traceback), /health names the model unavailable meanwhile, the supervisor has
the engine back within its restart budget, and the next request succeeds."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.helpers import MODEL, SERVER_ARGS, StreamReader, long_stream_body, running_server

pytestmark = pytest.mark.slow

NUM_STREAMS = 4
RESTART_BUDGET_S = 120.0  # backoff, a fresh interpreter and the model load, on a busy machine


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


def last_event(reader: StreamReader) -> dict:
    data = [line.removeprefix("data: ") for line in reader.lines if line.startswith("data: {")]
    return json.loads(data[-1])


def test_kill_9_of_the_engine_under_load(default_gguf, tmp_path) -> None:
    with running_server(tmp_path / "server", *SERVER_ARGS) as server:
        (engine_pid,) = child_pids(server.proc.pid)
        readers = [StreamReader(server.url, long_stream_body(f"Story number {i}.")).start() for i in range(NUM_STREAMS)]
        assert wait_until(lambda: all(r.num_data_lines >= 2 for r in readers), timeout=120), server.log()[-3000:]

        os.kill(engine_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for reader in readers:
            reader.thread.join(timeout=30)
            assert not reader.thread.is_alive(), "a stream hung after its engine was killed"
            error = last_event(reader)["error"]
            assert error["code"] == "UNAVAILABLE" and MODEL in error["message"]
            assert str(engine_pid) not in error["message"] and "Traceback" not in error["message"]
            assert "data: [DONE]" not in reader.lines
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["unavailable"] == [MODEL]

        assert wait_until(lambda: httpx.get(f"{server.url}/health", timeout=10).status_code == 200,
                          timeout=RESTART_BUDGET_S), server.log()[-3000:]  # fmt: skip
        restarted_in = time.monotonic() - killed_at
        answer = server.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
        )
        assert answer.choices[0].message.content and answer.usage.completion_tokens > 0
        assert engine_pid not in child_pids(server.proc.pid)
        assert "engine restarted" in server.log(), f"back after {restarted_in:.1f}s"
