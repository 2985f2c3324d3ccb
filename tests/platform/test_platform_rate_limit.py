"""RateLimiter: requests and tokens per minute, 429 decisions, headers, retry_after."""

from __future__ import annotations

import pytest
from platform_helpers import request_record

from firebox.platform.auth import Principal
from firebox.platform.rate_limit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_requests_per_minute(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    key = Principal("acme", "k1", requests_per_minute=2)
    first = limiter.check(key)
    assert first.allowed and first.retry_after == 0
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert "x-ratelimit-reset-requests" in first.headers
    assert "x-ratelimit-limit-tokens" not in first.headers
    clock.now += 10
    assert limiter.check(key).headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 5
    refused = limiter.check(key)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(45.0)  # the first request leaves the window at +60 s
    assert refused.headers["retry-after"] == "45"
    assert refused.headers["retry-after-ms"] == "45000"
    clock.now += 45
    assert limiter.check(key).allowed  # refused checks were not counted


def test_tokens_per_minute(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    key = Principal("acme", "k1", tokens_per_minute=100)
    assert limiter.check(key).allowed
    limiter.add_tokens(key, 60)
    clock.now += 20
    decision = limiter.check(key)
    assert decision.allowed and decision.headers["x-ratelimit-remaining-tokens"] == "40"
    limiter.add_tokens(key, 50)
    clock.now += 1
    refused = limiter.check(key)
    assert not refused.allowed
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.retry_after == pytest.approx(39.0)  # the 60 tokens expire 60 s after they were added
    clock.now += 39
    assert limiter.check(key).allowed


def test_keys_are_independent_and_unlimited_keys_pass(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    one, two = Principal("a", "k1", requests_per_minute=1), Principal("a", "k2", requests_per_minute=1)
    assert limiter.check(one).allowed and limiter.check(two).allowed
    assert not limiter.check(one).allowed
    free = Principal("a", "k3")
    for _ in range(1000):
        decision = limiter.check(free)
        assert decision.allowed and decision.headers == {}
    limiter.add_tokens(free, 10**9)
    assert limiter.check(Principal("fireworks", None, is_admin=True)).allowed


def test_finished_requests_charge_tokens_by_key_id(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    key = Principal("acme", "k1", tokens_per_minute=50)
    assert limiter.check(key).allowed
    limiter.observe_request(request_record("r1", key_id="k1", prompt_tokens=30, completion_tokens=25))
    refused = limiter.check(key)
    assert not refused.allowed and refused.headers["x-ratelimit-remaining-tokens"] == "0"
    # k2 was never checked with a limit: nothing to charge
    limiter.observe_request(request_record("r2", key_id="k2", prompt_tokens=30, completion_tokens=25))
    assert limiter.check(Principal("acme", "k2", tokens_per_minute=50)).allowed


def test_an_account_limit_is_shared_by_its_keys(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    one, two = (Principal("acme", key_id, account_requests_per_minute=2) for key_id in ("k1", "k2"))
    assert limiter.check(one).allowed
    clock.now += 10
    second = limiter.check(two)
    assert second.allowed and second.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 5
    for key in (one, two):
        refused = limiter.check(key)
        assert not refused.allowed and refused.retry_after == pytest.approx(45.0)
        assert refused.message == "rate limit exceeded for this account (shared by all of its API keys); retry later"
    assert limiter.check(Principal("rival", "k3", account_requests_per_minute=2)).allowed  # its own windows
    assert limiter.check(Principal("acme", None, is_admin=True)).allowed  # the operator's keys: unlimited
    clock.now += 45
    assert limiter.check(two).allowed


def test_key_and_account_windows_both_count_and_the_tighter_one_is_reported(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    key = Principal("acme", "k1", requests_per_minute=5, tokens_per_minute=100,
                    account_requests_per_minute=10, account_tokens_per_minute=50)  # fmt: skip
    first = limiter.check(key)
    assert first.headers["x-ratelimit-limit-requests"] == "5" and first.headers["x-ratelimit-limit-tokens"] == "50"
    limiter.add_tokens(key, 30)
    limiter.observe_request(request_record("r1", account_id="acme", key_id="k2", prompt_tokens=25))
    refused = limiter.check(key)  # the key has 70 tokens left, the account none
    assert not refused.allowed and refused.message.startswith("rate limit exceeded for this account")
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-remaining-requests"] == "4"  # refused checks were not counted
    clock.now += 60  # everything left both windows
    for _ in range(5):
        assert limiter.check(key).allowed
    refused = limiter.check(key)
    assert not refused.allowed and refused.message == "rate limit exceeded for this API key; retry later"
