"""Hardening (issue 19, item 9): roles on the control plane. A key of a `user` manages only its
own keys; users, roles and other users' keys are for the account's admins; an expiring key
cannot mint a key that outlives it; an account's rate limits are for its admins to tighten and the
operator to set."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from platform_helpers import ADMIN_KEY, LiveServer, platform_app

from firebox.platform.services import Platform
from firebox.platform.times import format_time, utcnow

KEYS = "/v1/accounts/acme/users/{user}/apiKeys"


@pytest.fixture
def server(platform: Platform) -> Iterator[LiveServer]:
    platform.accounts.create_account("acme", "Acme", "")
    platform.accounts.create_user("acme", role="admin", user_id="boss")
    platform.accounts.create_user("acme", role="user", user_id="alice")
    platform.accounts.create_user("acme", role="user", user_id="bob")
    with LiveServer(platform_app(platform)) as live:
        yield live


def _call(server: LiveServer, key: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"})


def test_a_user_manages_only_its_own_keys(server: LiveServer, platform: Platform) -> None:
    alice = platform.keys.create("acme", "alice").key
    bob_key = platform.keys.create("acme", "bob").api_key
    refused = [
        ("POST", "/v1/accounts/acme/users", {"role": "admin"}),
        ("PATCH", "/v1/accounts/acme/users/alice", {"role": "admin"}),
        ("PATCH", "/v1/accounts/acme/users/bob", {"role": "user", "displayName": "x"}),
        ("POST", KEYS.format(user="bob"), {}),
        ("POST", KEYS.format(user="boss"), {}),
        ("GET", KEYS.format(user="bob"), None),
        ("POST", KEYS.format(user="bob") + ":delete", {"keyId": bob_key.key_id}),
    ]
    for method, path, body in refused:
        response = _call(server, alice, method, path, body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert platform.accounts.get_user("acme", "alice").role == "user"
    assert [k.key_id for k in platform.keys.list("acme", "bob")] == [bob_key.key_id]
    own = _call(server, alice, "POST", KEYS.format(user="alice"), {})
    assert own.status_code == 200
    deleted = _call(server, alice, "POST", KEYS.format(user="alice") + ":delete", {"keyId": own.json()["keyId"]})
    assert deleted.status_code == 200
    assert _call(server, alice, "GET", "/v1/accounts/acme/users", None).status_code == 200  # reading is fine


def test_an_account_admin_manages_users_and_every_key(server: LiveServer, platform: Platform) -> None:
    boss = platform.keys.create("acme", "boss").key
    assert _call(server, boss, "POST", "/v1/accounts/acme/users?userId=carol", {"role": "user"}).status_code == 200
    assert _call(server, boss, "PATCH", "/v1/accounts/acme/users/bob", {"role": "admin"}).status_code == 200
    minted = _call(server, boss, "POST", KEYS.format(user="alice"), {})
    assert minted.status_code == 200
    assert _call(server, boss, "POST", KEYS.format(user="alice") + ":delete",
                 {"keyId": minted.json()["keyId"]}).status_code == 200  # fmt: skip
    assert _call(server, boss, "GET", "/v1/accounts/rival/users", None).status_code == 403  # its own account only


def test_an_expiring_key_cannot_mint_a_longer_lived_one(server: LiveServer, platform: Platform) -> None:
    expiry = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    key = platform.keys.create("acme", "alice", expire_time=expiry).key
    inherited = _call(server, key, "POST", KEYS.format(user="alice"), {"apiKey": {}})
    assert inherited.status_code == 200 and inherited.json()["expireTime"] == format_time(expiry, "microseconds")
    later = format_time(expiry + timedelta(days=365))
    refused = _call(server, key, "POST", KEYS.format(user="alice"), {"apiKey": {"expireTime": later}})
    assert refused.status_code == 403 and "expireTime" in refused.json()["error"]["message"]
    sooner = format_time(expiry - timedelta(minutes=5))
    assert _call(server, key, "POST", KEYS.format(user="alice"), {"apiKey": {"expireTime": sooner}}).status_code == 200


def _limits(response: httpx.Response) -> tuple[int | None, int | None]:
    assert response.status_code == 200, response.text
    return response.json()["requestsPerMinute"], response.json()["tokensPerMinute"]


def test_account_rate_limits_are_read_by_members_and_set_by_admins(server: LiveServer, platform: Platform) -> None:
    boss, alice = platform.keys.create("acme", "boss").key, platform.keys.create("acme", "alice").key
    assert _limits(_call(server, alice, "GET", "/v1/accounts/acme")) == (None, None)  # unlimited
    refused = _call(server, alice, "PATCH", "/v1/accounts/acme", {"requestsPerMinute": 100})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "PERMISSION_DENIED"
    assert _limits(_call(server, ADMIN_KEY, "PATCH", "/v1/accounts/acme", {"requestsPerMinute": 100})) == (100, None)
    assert _limits(_call(server, boss, "PATCH", "/v1/accounts/acme", {"tokensPerMinute": 5000})) == (100, 5000)
    assert _limits(_call(server, boss, "PATCH", "/v1/accounts/acme", {"requestsPerMinute": 50})) == (50, 5000)
    for loosened in ({"requestsPerMinute": 51}, {"requestsPerMinute": None}, {"tokensPerMinute": None}):
        refused = _call(server, boss, "PATCH", "/v1/accounts/acme", loosened)
        assert refused.status_code == 403 and "admin key" in refused.json()["error"]["message"], loosened
    assert _limits(_call(server, alice, "GET", "/v1/accounts/acme")) == (50, 5000)
    stored = platform.accounts.get_account("acme")
    assert (stored.requests_per_minute, stored.tokens_per_minute) == (50, 5000)
    assert _limits(_call(server, ADMIN_KEY, "PATCH", "/v1/accounts/acme", {"requestsPerMinute": None})) == (None, 5000)
    platform.accounts.create_account("rival")
    assert _call(server, boss, "PATCH", "/v1/accounts/rival", {"requestsPerMinute": 1}).status_code == 403
    assert _call(server, boss, "PATCH", "/v1/accounts/nobody", {"requestsPerMinute": 1}).status_code == 403
    assert _call(server, ADMIN_KEY, "PATCH", "/v1/accounts/nobody", {"requestsPerMinute": 1}).status_code == 404


def test_account_rate_limits_are_validated(server: LiveServer, platform: Platform) -> None:
    bad = [{"requestsPerMinute": 0}, {"requestsPerMinute": -1}, {"tokensPerMinute": "5"}, {"tokensPerMinute": 1.5},
           {"requestsPerMinute": 5.0}, {"requestsPerMinute": True}, {"tokensPerMinute": 2**31},
           {"displayName": "Acme 2"}, {}]  # fmt: skip
    for body in bad:
        response = _call(server, ADMIN_KEY, "PATCH", "/v1/accounts/acme", body)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert _limits(_call(server, ADMIN_KEY, "GET", "/v1/accounts/acme")) == (None, None)  # nothing was changed
    created = _call(server, ADMIN_KEY, "POST", "/v1/accounts", {"accountId": "beta", "tokensPerMinute": 1000})
    assert _limits(created) == (None, 1000)
    refused = _call(server, ADMIN_KEY, "POST", "/v1/accounts", {"accountId": "gamma", "requestsPerMinute": 0})
    assert refused.status_code == 400
