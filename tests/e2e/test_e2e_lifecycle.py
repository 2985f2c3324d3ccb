"""`firebox serve` as users run it: the start-up lines, and SIGTERM in the middle of a stream
(the stream ends, the process exits with 0)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.e2e.helpers import (
    MODEL,
    StreamReader,
    live_group_members,
    long_stream_body,
    running_server,
    stop_with_sigterm,
)

pytestmark = pytest.mark.slow

SHUTDOWN_GRACE_S = 1.0


def test_start_up_lines_name_the_url_and_the_models(e2e_server) -> None:
    log = e2e_server.log()
    assert f"serving on {e2e_server.url}" in log
    assert f"base_url={e2e_server.url}/inference/v1" in log
    assert f"model {MODEL} (context 512 tokens)" in log
    assert "auth: OFF" in log


def test_sigterm_during_a_stream_exits_cleanly(default_gguf, tmp_path) -> None:
    args = ("--max-model-len", "512", "--kv-cache-mib", "16", "--num-threads", "1")
    with running_server(tmp_path / "server", *args, shutdown_grace=SHUTDOWN_GRACE_S) as server:
        reader = StreamReader(server.url, long_stream_body()).start()
        assert wait_until(lambda: reader.num_data_lines >= 3, timeout=120), server.log()[-3000:]
        exit_code = stop_with_sigterm(server, timeout=SHUTDOWN_GRACE_S + 60)
        reader.thread.join(timeout=30)
        assert not reader.thread.is_alive(), "the stream hung after the server stopped"
        log = server.log()
        # The engine runs in a process of its own: SIGTERM must stop that one too.
        assert wait_until(lambda: not live_group_members(server.proc.pid), timeout=30)
    assert exit_code == 0, log[-3000:]
    assert "data: [DONE]" not in reader.lines  # cut at shutdown, not run to its 400 tokens
    assert "shutting down" in log
