"""GET /v1/accounts/{account}/usage: buckets, grouping, percentiles, authorization."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from platform_helpers import ADMIN_KEY, platform_app, request_record

from firebox.platform.services import Platform
from firebox.platform.usage import insert_usage_records
from firebox.request_record import RequestRecord

A, B = "accounts/acme/models/a", "accounts/acme/models/b"
FIELDS = ["start", "end", "requests", "prompt_tokens", "cached_tokens", "completion_tokens",
          "ttft_p50_ms", "ttft_p99_ms", "latency_p50_ms", "latency_p99_ms"]


def _at(day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    return int(datetime(2024, 5, day, hour, minute, second, tzinfo=UTC).timestamp())


def _entry(request_id: str, created: int, model: str = A, key_id: str = "k1", account_id: str = "acme",
           deployment: str | None = None, tokens: tuple[int, int, int] = (1, 0, 1),
           ttft: float | None = None, latency: float = 0.0) -> RequestRecord:
    prompt, cached, completion = tokens
    return request_record(request_id, account_id=account_id, key_id=key_id, model=model, deployment=deployment,
                          prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, ttft_s=ttft,
                          latency_s=latency, created=created)


@pytest.fixture
def client(platform: Platform) -> TestClient:
    for account in ("acme", "other"):
        platform.accounts.create_account(account)
        platform.accounts.create_user(account, role="user", user_id="alice")
    insert_usage_records(platform.database, [
        _entry("r1", _at(1, 10, 5), tokens=(10, 2, 5), ttft=0.1, latency=1.0),
        _entry("r2", _at(1, 10, 30), key_id="k2", deployment="d1", tokens=(20, 0, 10), ttft=0.2, latency=2.0),
        _entry("r3", _at(1, 10, 59, 59), model=B, tokens=(5, 0, 1), latency=0.5),
        _entry("r4", _at(1, 11), tokens=(1, 0, 1), ttft=0.3, latency=3.0),
        _entry("r5", _at(2, 9)),
        _entry("x1", _at(1, 10, 10), account_id="other", tokens=(999, 0, 999)),
    ])
    return TestClient(platform_app(platform))


def _key(platform: Platform, account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.keys.create(account, 'alice').key}"}


def _usage(client: TestClient, headers: dict[str, str], account: str = "acme", **params: str):
    return client.get(f"/v1/accounts/{account}/usage", params=params, headers=headers)


def test_hourly_totals_and_percentiles(client: TestClient, platform: Platform) -> None:
    response = _usage(client, _key(platform, "acme"), start="2024-05-01T10:00:00Z", end="2024-05-01T12:00:00Z",
                      granularity="hour")
    assert response.status_code == 200
    first, second = response.json()["data"]
    assert list(first) == FIELDS
    assert first == {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T11:00:00Z", "requests": 3,
                     "prompt_tokens": 35, "cached_tokens": 2, "completion_tokens": 16,
                     "ttft_p50_ms": 150.0, "ttft_p99_ms": 199.0,
                     "latency_p50_ms": 1000.0, "latency_p99_ms": 1980.0}
    assert (second["start"], second["requests"], second["ttft_p50_ms"]) == ("2024-05-01T11:00:00Z", 1, 300.0)


def test_group_by_model_key_and_deployment(client: TestClient, platform: Platform) -> None:
    headers = _key(platform, "acme")
    window = {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T12:00:00Z"}
    by_model = _usage(client, headers, granularity="hour", group_by="model", **window).json()["data"]
    assert [(row["start"][11:13], row["model"], row["requests"]) for row in by_model] == [
        ("10", A, 2), ("10", B, 1), ("11", A, 1)]
    assert by_model[1]["ttft_p50_ms"] is None and by_model[1]["latency_p50_ms"] == 500.0
    by_key = _usage(client, headers, granularity="day", group_by="key", start=str(_at(1, 0)),
                    end=str(_at(3, 0))).json()["data"]
    assert [(row["start"], row["key"], row["requests"]) for row in by_key] == [
        ("2024-05-01T00:00:00Z", "k1", 3), ("2024-05-01T00:00:00Z", "k2", 1), ("2024-05-02T00:00:00Z", "k1", 1)]
    by_deployment = _usage(client, headers, granularity="day", group_by="deployment", **window).json()["data"]
    assert {row["deployment"]: row["requests"] for row in by_deployment} == {None: 3, "d1": 1}


def test_end_is_exclusive_and_other_accounts_never_mix(client: TestClient, platform: Platform) -> None:
    data = _usage(client, {"Authorization": f"Bearer {ADMIN_KEY}"}, start="2024-05-01T10:00:00Z",
                  end="2024-05-01T11:00:00Z", granularity="all").json()["data"]
    assert [(row["requests"], row["prompt_tokens"]) for row in data] == [(3, 35)]
    assert data[0]["start"] == "2024-05-01T10:00:00Z" and data[0]["end"] == "2024-05-01T11:00:00Z"


def test_authorization_and_validation(client: TestClient, platform: Platform) -> None:
    assert _usage(client, {}).status_code == 401
    forbidden = _usage(client, _key(platform, "other"))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "PERMISSION_DENIED"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert _usage(client, admin, account="nobody").status_code == 404
    bad = _usage(client, admin, granularity="minute")
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert _usage(client, admin, group_by="colour").status_code == 400
    assert _usage(client, admin, start="yesterday").status_code == 400
    for out_of_range in ("1e30", "inf", "-1e30", "9999-12-31T23:00:00-05:00"):  # not a datetime: 400, not 500
        assert _usage(client, admin, start=out_of_range).status_code == 400
    assert _usage(client, admin, start="2024-05-02T00:00:00Z", end="2024-05-01T00:00:00Z").status_code == 400
