"""The platform behind real inference requests, wired as `firebox serve` wires it (the platform's
authenticator, rate limiter, usage as the app's ledger, metrics and limits as callbacks): private
models per account, 429s with Retry-After and x-ratelimit-* headers, the usage API and /metrics
after a short load, and requests refused before serving counted and recorded (issue 19, item 14)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from platform_helpers import ADMIN_KEY
from prometheus_client.parser import text_string_to_metric_families

from firebox.api.app import create_app
from firebox.api.routes.control_plane import control_plane_router
from firebox.api.routes.metrics import metrics_router
from firebox.api.routes.usage import usage_router
from firebox.engine.ipc import IDLE_STATS
from firebox.platform.services import Platform
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread
from tests.fakes import FakeEngine

PUBLIC = "accounts/fireworks/models/fake-chatml"
PRIVATE = "accounts/acme/models/secret"


@dataclass
class Served:
    url: str
    platform: Platform

    def key(self, account: str, **limits: int) -> str:
        self.platform.accounts.ensure_account(account)
        self.platform.accounts.ensure_user(account, "alice")
        return self.platform.keys.create(account, "alice", **limits).key

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/inference/v1", api_key=key, max_retries=0)


@pytest.fixture
def database_url() -> None:
    """Wiring, not storage: SQLite only (overrides the conftest matrix)."""
    return None


@pytest.fixture
def served(platform: Platform) -> Iterator[Served]:
    registry = ModelRegistry()
    for engine in (FakeEngine(), FakeEngine(name=PRIVATE)):
        registry.add(engine.name, engine)
        platform.metrics.add_engine(engine.name, lambda: IDLE_STATS)
    routers = [control_plane_router(platform.accounts, platform.keys, platform.authenticator),
               usage_router(platform.usage_query, platform.accounts, platform.authenticator),
               metrics_router(platform.metrics)]  # fmt: skip
    app = create_app(registry, platform.authenticator, platform.observers(), extra_routers=routers,
                     rate_limiter=platform.rate_limiter, response_store=platform.responses,
                     ledger=platform.usage)  # fmt: skip
    with serve_in_thread(app) as url:
        yield Served(url, platform)


def _chat(client: openai.OpenAI, model: str = PUBLIC) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=3
    )


def test_a_private_model_is_only_for_its_account(served: Served) -> None:
    acme, rival = served.openai(served.key("acme")), served.openai(served.key("rival"))
    assert _chat(acme, PRIVATE).parse().usage.completion_tokens == 3
    with pytest.raises(openai.NotFoundError):
        _chat(rival, PRIVATE)
    with pytest.raises(openai.NotFoundError):
        rival.responses.create(model=PRIVATE, input="Hello")
    assert _chat(rival, PUBLIC).parse().usage.completion_tokens == 3  # public models are for everyone
    assert {m.id for m in rival.models.list()} == {PUBLIC}
    assert {m.id for m in acme.models.list()} == {PUBLIC, PRIVATE}


def test_a_key_over_its_request_limit_gets_a_429_with_retry_after(served: Served) -> None:
    client = served.openai(served.key("acme", requests_per_minute=2))
    first = _chat(client)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert _chat(client).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client)
    headers = refused.value.response.headers
    assert 0 < int(headers["retry-after"]) <= 60 and headers["x-ratelimit-remaining-requests"] == "0"
    assert set(refused.value.body) == {"message", "type", "param", "code"}
    assert _chat(served.openai(served.key("acme"))).parse().usage.completion_tokens == 3  # other keys unaffected


def test_a_key_over_its_token_limit_is_refused_until_the_window_moves(served: Served) -> None:
    client = served.openai(served.key("acme", tokens_per_minute=10))
    first = _chat(client).parse()
    assert first.usage.total_tokens > 10  # charged when the request finished
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(client)
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.value.response.headers["retry-after"]) > 0


def test_a_limited_key_cannot_mint_a_key_with_looser_limits(served: Served) -> None:
    limited = served.key("acme", requests_per_minute=5, tokens_per_minute=1000)
    url = f"{served.url}/v1/accounts/acme/users/alice/apiKeys"
    headers = {"Authorization": f"Bearer {limited}"}
    inherited = httpx.post(url, headers=headers, json={"apiKey": {"displayName": "child"}})
    assert inherited.status_code == 200
    assert (inherited.json()["requestsPerMinute"], inherited.json()["tokensPerMinute"]) == (5, 1000)
    tighter = httpx.post(url, headers=headers, json={"apiKey": {"requestsPerMinute": 2}})
    assert (tighter.json()["requestsPerMinute"], tighter.json()["tokensPerMinute"]) == (2, 1000)
    looser = httpx.post(url, headers=headers, json={"apiKey": {"tokensPerMinute": 1001}})
    assert looser.status_code == 403 and looser.json()["error"]["code"] == "PERMISSION_DENIED"
    admin = httpx.post(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={"apiKey": {}})
    assert admin.json()["requestsPerMinute"] is None  # the operator's keys set any limit


def _limit_account(served: Served, account: str, **limits: int | None) -> None:
    """Set the account's limits as the operator would: through the control plane."""
    served.platform.accounts.ensure_account(account)
    response = httpx.patch(f"{served.url}/v1/accounts/{account}", json=limits,
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
    assert response.status_code == 200, response.text


ACCOUNT_REFUSAL = "rate limit exceeded for this account (shared by all of its API keys); retry later"


def test_the_keys_of_an_account_share_its_request_limit(served: Served) -> None:
    one, two = served.openai(served.key("acme")), served.openai(served.key("acme"))
    _limit_account(served, "acme", requestsPerMinute=2)
    assert _chat(one).headers["x-ratelimit-remaining-requests"] == "1"
    second = _chat(two).headers
    assert (second["x-ratelimit-limit-requests"], second["x-ratelimit-remaining-requests"]) == ("2", "0")
    for client in (one, two, served.openai(served.key("acme"))):  # whichever key, even a new one
        with pytest.raises(openai.RateLimitError) as refused:
            _chat(client)
        assert refused.value.body["message"] == ACCOUNT_REFUSAL and refused.value.body["code"] == "RESOURCE_EXHAUSTED"
        headers = refused.value.response.headers
        assert 0 < int(headers["retry-after"]) <= 60 and headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-limit-requests"] == "2"
    rival = served.openai(served.key("rival"))
    for _ in range(3):
        assert _chat(rival).parse().usage.completion_tokens == 3  # another account is unaffected


def test_a_key_limit_and_its_account_limit_both_apply(served: Served) -> None:
    _limit_account(served, "acme", requestsPerMinute=3)
    limited = served.openai(served.key("acme", requests_per_minute=1))
    assert _chat(limited).headers["x-ratelimit-remaining-requests"] == "0"  # the tighter of the two: the key's
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(limited)
    assert refused.value.body["message"] == "rate limit exceeded for this API key; retry later"
    other = served.openai(served.key("acme"))
    assert _chat(other).headers["x-ratelimit-remaining-requests"] == "1"  # the key's request counted for the account
    _chat(other)
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(other)
    assert refused.value.body["message"] == ACCOUNT_REFUSAL


def test_an_account_over_its_token_limit_is_refused_whichever_key(served: Served) -> None:
    one, two = served.openai(served.key("acme")), served.openai(served.key("acme"))
    _limit_account(served, "acme", tokensPerMinute=10)
    assert _chat(one).parse().usage.total_tokens > 10  # charged to the account when the request finished
    with pytest.raises(openai.RateLimitError) as refused:
        _chat(two)
    assert refused.value.body["message"] == ACCOUNT_REFUSAL
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "10"
    assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.value.response.headers["retry-after"]) > 0
    _limit_account(served, "acme", tokensPerMinute=None)  # lifted: admitted again at once
    assert _chat(two).parse().usage.completion_tokens == 3
    assert _chat(served.openai(served.key("rival"))).parse().usage.completion_tokens == 3


def test_usage_api_and_metrics_after_a_short_load(served: Served) -> None:
    keys = {"k1": served.key("acme"), "k2": served.key("acme")}
    counts = {"k1": 3, "k2": 2}
    completion_tokens = 0
    for name, count in counts.items():
        client = served.openai(keys[name])
        for _ in range(count):
            completion_tokens += _chat(client).parse().usage.completion_tokens
    served.openai(keys["k1"]).responses.create(model=PRIVATE, input="Hi", max_output_tokens=2)
    served.platform.usage.flush()

    usage = httpx.get(f"{served.url}/v1/accounts/acme/usage", params={"group_by": "model", "granularity": "day"},
                      headers={"Authorization": f"Bearer {keys['k2']}"})  # fmt: skip
    assert usage.status_code == 200
    by_model = {row["model"]: row for row in usage.json()["data"]}
    assert (by_model[PUBLIC]["requests"], by_model[PRIVATE]["requests"]) == (5, 1)
    assert by_model[PUBLIC]["completion_tokens"] == completion_tokens and by_model[PRIVATE]["completion_tokens"] == 2
    assert by_model[PUBLIC]["prompt_tokens"] > 0 and by_model[PUBLIC]["latency_p50_ms"] > 0
    by_key = httpx.get(f"{served.url}/v1/accounts/acme/usage", params={"group_by": "key"},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]  # fmt: skip
    key_ids = {served.platform.keys.find_by_key(k).key_id: n for n, k in keys.items()}
    assert {key_ids[row["key"]]: row["requests"] for row in by_key} == {"k1": 4, "k2": 2}

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{served.url}/metrics", headers=admin).text)}
    success = {(s.labels["model_name"], s.labels["finished_reason"]): s.value
               for s in families["firebox:request_success"].samples if s.name.endswith("_total")}  # fmt: skip
    assert success[(PUBLIC, "length")] == 5 and success[(PRIVATE, "length")] == 1


def _metric_models(url: str, headers: dict[str, str]) -> set[str]:
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return {s.labels["model_name"] for f in text_string_to_metric_families(text) for s in f.samples
            if "model_name" in s.labels}  # fmt: skip


def test_health_and_metrics_name_private_models_only_to_their_account(served: Served) -> None:
    acme, rival = served.key("acme"), served.key("rival")
    for headers in ({}, {"Authorization": f"Bearer {rival}"}, {"Authorization": "Bearer not-a-key"}):
        assert httpx.get(f"{served.url}/health", headers=headers).json()["models"] == [PUBLIC]
        assert _metric_models(served.url, headers) == {PUBLIC}
    for key in (acme, ADMIN_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        assert set(httpx.get(f"{served.url}/health", headers=headers).json()["models"]) == {PUBLIC, PRIVATE}
        assert _metric_models(served.url, headers) == {PUBLIC, PRIVATE}


def test_the_prefix_cache_is_not_shared_between_accounts(served: Served) -> None:
    """Another account's prompt must not show up in cached_tokens (it would let a tenant probe
    another's system prompt); within an account, repeats hit the cache."""
    prompt = [{"role": "system", "content": "The secret system prompt of acme, long enough to fill blocks. " * 4},
              {"role": "user", "content": "Hi"}]  # fmt: skip

    def cached(key: str, **extra: Any) -> int:
        answer = served.openai(key).chat.completions.create(model=PUBLIC, messages=prompt, max_tokens=2, **extra)
        return answer.usage.prompt_tokens_details.cached_tokens

    acme, rival = served.key("acme"), served.key("rival")
    assert cached(acme) == 0
    assert cached(rival) == 0  # same prompt, other account: no hit
    assert cached(served.key("acme")) > 0  # another key of the same account shares the account's cache
    assert cached(rival, extra_body={"prompt_cache_isolation_key": "a"}) == 0  # the key adds to the salt
    assert cached(rival, extra_body={"prompt_cache_isolation_key": "a"}) > 0


CHAT = {"model": PUBLIC, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}


def _post(served: Served, key: str, body: object, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{served.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _refusals(served: Served, status: int) -> float:
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "firebox:http_requests_total" and sample.labels.get("status") == str(status)
               and sample.labels.get("model_name") == "")  # fmt: skip


def _usage_rows(served: Served) -> list[Any]:
    from sqlalchemy import select

    from firebox.platform.schema import UsageRow

    served.platform.usage.flush()
    with served.platform.database.session() as session:
        return list(session.scalars(select(UsageRow)))


def test_refusals_are_counted_and_recorded_where_the_key_is_known(served: Served) -> None:
    key, limited = served.key("acme"), served.key("acme", requests_per_minute=1)
    assert _post(served, "not-a-key", CHAT).status_code == 401
    assert _post(served, key, {**CHAT, "model": "accounts/fireworks/models/nope"}).status_code == 404
    assert _post(served, key, {**CHAT, "max_tokens": "three"}).status_code == 400
    assert _post(served, key, {"model": PUBLIC, "prompt": 1}, "/inference/v1/completions").status_code == 400
    assert _post(served, limited, CHAT).status_code == 200
    assert _post(served, limited, CHAT).status_code == 429

    assert [_refusals(served, status) for status in (401, 404, 400, 429)] == [1, 1, 2, 1]
    refused = [row for row in _usage_rows(served) if row.status_code >= 400]  # the 401's key is unknown: not there
    assert sorted((r.status_code, r.endpoint) for r in refused) == [
        (400, "chat.completions"), (400, "completions"), (404, "chat.completions"), (429, "chat.completions")]
    assert all(r.account_id == "acme" and r.key_id and r.completion_tokens == 0 for r in refused)


def test_a_refusal_by_the_service_is_counted_once(served: Served) -> None:
    refused = _post(served, served.key("acme"), {**CHAT, "stream_options": {"include_usage": True}})  # no stream
    assert refused.status_code == 400
    assert _refusals(served, 400) == 0  # the service recorded it, under its model
    assert [(r.model, r.status_code) for r in _usage_rows(served)] == [(PUBLIC, 400)]
