"""Per-key and per-account limits on choices in flight (issue 19, item 5): two keys of one
account through the real server; a request over a limit is a 429 with Retry-After naming it, and
a finished stream gives its share back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from firebox.config import ServerConfig
from firebox.serving.auth import Principal, key_id_of
from firebox.serving.errors import RateLimitedError
from firebox.serving.inflight import InflightLimiter
from tests.conftest import serve_in_thread, wait_until

MODEL = "accounts/fireworks/models/fake-chatml"
KEYS = ("key-a", "key-b")


class _TwoKeysOneAccount:
    def is_open(self) -> bool:
        return False

    async def authenticate(self, token: str | None) -> Principal | None:
        return Principal("acme", key_id_of(token)) if token in KEYS else None


@pytest.fixture
def limited() -> Iterator[tuple[str, object]]:
    from firebox.api.app import create_app
    from firebox.serving.registry import ModelRegistry
    from tests.fakes import FakeEngine

    engine = FakeEngine(token_delay=0.02)
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    config = ServerConfig(max_inflight_per_key=3, max_inflight_per_account=5)
    with serve_in_thread(create_app(registry, _TwoKeysOneAccount(), config=config)) as url:
        yield url, engine


def _chat(url: str, key: str, n: int = 1, stream: bool = False, client: httpx.Client | None = None):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": n, "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    if stream:
        return (client or httpx.Client()).stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers)
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _refused(response: httpx.Response, names: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert names in response.json()["error"]["message"]


def test_a_key_and_its_account_are_held_to_their_limits(limited) -> None:
    url, engine = limited
    with httpx.Client(timeout=30) as client, contextlib.ExitStack() as open_streams:
        first = open_streams.enter_context(_chat(url, "key-a", n=3, stream=True, client=client))
        assert first.status_code == 200
        _refused(_chat(url, "key-a"), "--max-inflight-per-key")  # the key holds 3 of 3
        second = open_streams.enter_context(_chat(url, "key-b", n=2, stream=True, client=client))
        assert second.status_code == 200  # the other key: the account holds 5 of 5 now
        _refused(_chat(url, "key-b"), "--max-inflight-per-account")
        first.read()  # the first stream ends: its 3 choices are given back
        assert wait_until(lambda: len(engine.running) <= 2)
        assert _chat(url, "key-a", n=3).status_code == 200
        second.read()
    assert _chat(url, "key-b", n=3).status_code == 200


def test_a_request_over_the_limit_on_its_own_is_refused_before_the_engine(limited) -> None:
    url, engine = limited
    _refused(_chat(url, "key-a", n=4), "at most 3")
    assert not engine.submitted


def test_the_limiter_counts_choices_and_releases_once() -> None:
    limiter = InflightLimiter(per_key=4, per_account=0)
    key = Principal("acme", "k1")
    lease = limiter.acquire(key, 4)
    with pytest.raises(RateLimitedError):
        limiter.acquire(key, 1)
    assert limiter.acquire(Principal("acme", None), 100) is not None  # open access: no key to count, no account cap
    lease.release()
    lease.release()
    assert limiter.in_flight(key) == (0, 100)
    limiter.acquire(key, 4)


def test_the_defaults_never_bite_one_normal_client() -> None:
    config = ServerConfig()
    assert config.max_inflight_per_key >= 128 and config.max_inflight_per_account >= config.max_inflight_per_key
    with pytest.raises(ValueError):
        ServerConfig(max_inflight_per_key=-1)


def test_the_flags_reach_the_server_config(monkeypatch) -> None:
    from typer.testing import CliRunner

    from firebox.cli import app

    seen = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    args = ["serve", "--max-inflight-per-key", "8", "--max-inflight-per-account", "0"]
    assert CliRunner().invoke(app, args, env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert (seen[0].max_inflight_per_key, seen[0].max_inflight_per_account) == (8, 0)
    assert CliRunner().invoke(app, ["serve", "--max-inflight-per-key", "-1"]).exit_code == 2
