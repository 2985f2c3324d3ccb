"""Shared fixtures: a real HTTP server (uvicorn on a free port, in a thread) over FakeEngines,
and the real `openai` and `fireworks-ai` clients pointed at it.

Heavy imports stay inside the fixtures, so test directories that do not use them pay nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

API_KEY = "test-key"


@contextlib.contextmanager
def serve_in_thread(app: Any, send_buffer_bytes: int | None = None) -> Iterator[str]:
    """Run `app` with uvicorn on a free port in a background thread; yield its base URL.
    `send_buffer_bytes` fixes each connection's kernel send buffer (no autotuning: a client that
    stops reading blocks the server's writes sooner)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer_bytes is not None:  # accepted connections inherit it from the listening socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@dataclass
class LiveServer:
    url: str
    engine: Any  # tests.fakes.FakeEngine
    other_engine: Any  # a second model, in another account
    records: list[Any] = field(default_factory=list)  # RequestRecords from the completion callback
    lifecycle: Any = None

    def openai(self, api_key: str = API_KEY, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/inference/v1", api_key=api_key, max_retries=0, **kwargs)

    def fireworks(self, api_key: str = API_KEY, **kwargs: Any) -> Any:
        import fireworks

        return fireworks.Fireworks(base_url=self.url, api_key=api_key, max_retries=0, **kwargs)


def _build_server(api_keys: tuple[str, ...]) -> tuple[Any, LiveServer]:
    from firebox.api.app import create_app
    from firebox.api.state import Lifecycle
    from firebox.serving.auth import StaticKeyAuthenticator
    from firebox.serving.registry import ModelRegistry
    from tests.fakes import FakeEngine

    engine, other = FakeEngine(), FakeEngine(name="accounts/acme/models/other-model", max_model_len=64)
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    registry.add(other.name, other)
    live = LiveServer(url="", engine=engine, other_engine=other, lifecycle=Lifecycle())
    app = create_app(registry, StaticKeyAuthenticator(api_keys), [live.records.append], lifecycle=live.lifecycle)
    return app, live


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    """Open access (no keys configured), one FakeEngine model plus a second one."""
    app, live = _build_server(())
    with serve_in_thread(app) as url:
        live.url = url
        yield live


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[LiveServer]:
    """Auth on: only API_KEY is accepted."""
    app, live = _build_server((API_KEY,))
    with serve_in_thread(app) as url:
        live.url = url
        yield live


@pytest.fixture
def server(live_server: LiveServer) -> Iterator[LiveServer]:
    """The open server with its engines and records reset for this test."""
    for engine in (live_server.engine, live_server.other_engine):
        engine.reset()
    live_server.records.clear()
    live_server.lifecycle.is_draining = False
    yield live_server
    assert wait_until(lambda: not live_server.engine.running), "a request was left running in the engine"


@pytest.fixture
def client(server: LiveServer) -> Any:
    """`openai.OpenAI` at `/inference/v1`."""
    return server.openai()


@pytest.fixture
def fw_client(server: LiveServer) -> Any:
    """`fireworks.Fireworks` with an overridden base URL (so it calls `/v1/...`)."""
    return server.fireworks()
