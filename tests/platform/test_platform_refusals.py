"""Requests refused before serving (401, 404, 429, 400) are counted in /metrics and, where the key
is known, recorded in usage as refused (issue 19, item 14), wired as `firebox serve` wires the
platform (usage as the app's ledger, metrics and limits as callbacks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from firebox.api.app import create_app
from firebox.api.routes.metrics import metrics_router
from firebox.engine.ipc import IDLE_STATS
from firebox.platform.schema import UsageRow
from firebox.platform.services import Platform
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread
from tests.fakes import FakeEngine

MODEL = "accounts/fireworks/models/fake-chatml"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}


@dataclass
class Served:
    url: str
    platform: Platform

    def key(self, **limits: int) -> tuple[str, str]:
        """A key of account acme: (the key, its id)."""
        self.platform.accounts.ensure_account("acme")
        self.platform.accounts.ensure_user("acme", "alice")
        created = self.platform.keys.create("acme", "alice", **limits)
        return created.key, created.api_key.key_id

    def post(self, key: str, body: object, path: str = "/v1/chat/completions") -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def refusals(self, status: int) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                   if sample.name == "firebox:http_requests_total" and sample.labels.get("status") == str(status)
                   and sample.labels.get("model_name") == "")  # fmt: skip

    def usage_rows(self) -> list[UsageRow]:
        self.platform.usage.flush()
        with self.platform.database.session() as session:
            return list(session.scalars(select(UsageRow).order_by(UsageRow.created)))


@pytest.fixture
def database_url() -> None:
    """Wiring, not storage: SQLite only (overrides the conftest matrix)."""
    return None


@pytest.fixture
def served(platform: Platform) -> Iterator[Served]:
    registry = ModelRegistry()
    engine = FakeEngine()
    registry.add(engine.name, engine)
    platform.metrics.add_engine(engine.name, lambda: IDLE_STATS)
    app = create_app(registry, platform.authenticator, platform.observers(), extra_routers=[metrics_router(platform.metrics)],
                     rate_limiter=platform.rate_limiter, ledger=platform.usage)  # fmt: skip
    with serve_in_thread(app) as url:
        yield Served(url, platform)


def test_refusals_are_counted_and_recorded_where_the_key_is_known(served: Served) -> None:
    key, key_id = served.key()
    assert served.post("not-a-key", CHAT).status_code == 401
    assert served.post(key, {**CHAT, "model": "accounts/fireworks/models/nope"}).status_code == 404
    assert served.post(key, {**CHAT, "max_tokens": "three"}).status_code == 400
    assert served.post(key, {"model": MODEL, "prompt": 1}, "/inference/v1/completions").status_code == 400
    limited, limited_id = served.key(requests_per_minute=1)
    assert served.post(limited, CHAT).status_code == 200
    assert served.post(limited, CHAT).status_code == 429

    assert [served.refusals(status) for status in (401, 404, 400, 429)] == [1, 1, 2, 1]
    rows = [(r.key_id, r.status_code, r.endpoint) for r in served.usage_rows() if r.status_code >= 400]
    assert sorted(rows) == sorted([(key_id, 404, "chat.completions"), (key_id, 400, "chat.completions"),
                                   (key_id, 400, "completions"), (limited_id, 429, "chat.completions")])  # fmt: skip
    assert all(r.account_id == "acme" and r.completion_tokens == 0 for r in served.usage_rows() if r.status_code >= 400)


def test_a_refusal_by_the_service_is_counted_once(served: Served) -> None:
    key, _ = served.key()
    refused = served.post(key, {**CHAT, "stream_options": {"include_usage": True}})  # without stream: the service's 400
    assert refused.status_code == 400
    assert served.refusals(400) == 0  # the service recorded it, under its model
    assert [(r.model, r.status_code) for r in served.usage_rows()] == [(MODEL, 400)]
