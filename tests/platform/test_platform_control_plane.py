"""Control plane over HTTP, driven by the `fireworks-ai` SDK against a live server."""

from __future__ import annotations

from collections.abc import Iterator

import fireworks
import httpx
import pytest
from platform_helpers import ADMIN_KEY, LiveServer, platform_app

from firebox.platform.services import Platform


@pytest.fixture
def server(platform: Platform) -> Iterator[LiveServer]:
    with LiveServer(platform_app(platform)) as live:
        yield live


def _sdk(server: LiveServer, key: str, account_id: str) -> fireworks.Fireworks:
    return fireworks.Fireworks(api_key=key, base_url=server.url, account_id=account_id, max_retries=0)


def _create_account(server: LiveServer, key: str, account_id: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/accounts", headers={"Authorization": f"Bearer {key}"},
                      json={"accountId": account_id, "displayName": account_id.title(),
                            "email": f"ops@{account_id}.test"})


def test_sdk_manages_users_and_keys(server: LiveServer) -> None:
    created = _create_account(server, ADMIN_KEY, "acme")
    assert created.status_code == 200
    assert created.json()["name"] == "accounts/acme" and created.json()["displayName"] == "Acme"
    admin = _sdk(server, ADMIN_KEY, "acme")
    user = admin.users.create(role="user", user_id="alice", display_name="Alice", email="alice@acme.test")
    assert (user.name, user.role, user.state) == ("accounts/acme/users/alice", "user", "READY")
    assert user.create_time is not None
    key = admin.api_keys.create("alice", api_key={"display_name": "ci"})
    assert key.key.startswith("fw_") and key.key.startswith(key.prefix) and key.key_id
    assert key.display_name == "ci" and key.expire_time is None

    # The new key manages its own account, and its plain text is never shown again.
    alice = _sdk(server, key.key, "acme")
    listed = list(alice.api_keys.list("alice"))
    assert [(k.key_id, k.key) for k in listed] == [(key.key_id, None)]
    second = alice.api_keys.create("alice", api_key={"display_name": "two", "expire_time": "2999-01-01T00:00:00Z"})
    assert second.expire_time.year == 2999
    assert [u.name for u in alice.users.list()] == ["accounts/acme/users/alice"]
    assert alice.users.get("alice").email == "alice@acme.test"
    with pytest.raises(fireworks.PermissionDeniedError):  # a user may not make itself an admin
        alice.users.update("alice", role="admin")
    assert admin.users.update("alice", role="admin", display_name="Alice A").display_name == "Alice A"
    assert [a.name for a in alice.accounts.list()] == ["accounts/acme"]
    assert alice.accounts.get().email == "ops@acme.test"

    alice.api_keys.delete("alice", key_id=second.key_id)
    assert [k.key_id for k in alice.api_keys.list("alice")] == [key.key_id]
    with pytest.raises(fireworks.NotFoundError):
        alice.api_keys.delete("alice", key_id=second.key_id)


def test_keys_cannot_cross_accounts(server: LiveServer, platform: Platform) -> None:
    for account in ("acme", "rival"):
        assert _create_account(server, ADMIN_KEY, account).status_code == 200
        platform.accounts.create_user(account, role="admin", user_id="root")
    acme_key = platform.keys.create("acme", "root").key
    rival = platform.keys.create("rival", "root")
    acme = _sdk(server, acme_key, "rival")
    with pytest.raises(fireworks.PermissionDeniedError):
        acme.users.list()
    with pytest.raises(fireworks.PermissionDeniedError):
        acme.api_keys.create("root", api_key={})
    with pytest.raises(fireworks.PermissionDeniedError):
        acme.api_keys.delete("root", key_id=rival.api_key.key_id)
    with pytest.raises(fireworks.PermissionDeniedError):
        acme.accounts.get()
    assert [a.name for a in acme.accounts.list()] == ["accounts/acme"]
    assert _create_account(server, acme_key, "mine").status_code == 403
    admin_accounts = _sdk(server, ADMIN_KEY, "acme").accounts.list()
    assert [a.name for a in admin_accounts] == ["accounts/acme", "accounts/fireworks", "accounts/rival"]


def test_errors_are_openai_shaped(server: LiveServer) -> None:
    with pytest.raises(fireworks.AuthenticationError):
        _sdk(server, "fw_not_a_key", "fireworks").users.list()
    admin = _sdk(server, ADMIN_KEY, "fireworks")
    with pytest.raises(fireworks.NotFoundError):
        admin.users.get("ghost")
    with pytest.raises(fireworks.NotFoundError):
        admin.api_keys.create("ghost", api_key={})
    with pytest.raises(fireworks.BadRequestError):
        admin.users.create(role="wizard", user_id="merlin")
    admin.users.create(role="user", user_id="merlin")
    with pytest.raises(fireworks.ConflictError):
        admin.users.create(role="user", user_id="merlin")
    response = httpx.post(f"{server.url}/v1/accounts/fireworks/users/merlin/apiKeys",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                          json={"apiKey": {"requestsPerMinute": 0}})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_paging(server: LiveServer, platform: Platform) -> None:
    for i in range(5):
        platform.accounts.create_user("fireworks", role="user", user_id=f"user-{i}")
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = f"{server.url}/v1/accounts/fireworks/users"
    first = httpx.get(url, params={"pageSize": 2}, headers=headers).json()
    assert [u["name"][-6:] for u in first["users"]] == ["user-0", "user-1"] and first["totalSize"] == 5
    rest = list(_sdk(server, ADMIN_KEY, "fireworks").users.list(page_size=2))  # the SDK follows the tokens
    for token in ("-2", "two"):
        assert httpx.get(url, params={"pageToken": token}, headers=headers).status_code == 400
    assert [u.name[-6:] for u in rest] == [f"user-{i}" for i in range(5)]
