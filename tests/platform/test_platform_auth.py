"""DatabaseAuthenticator: admin keys, database keys, expiry, open mode, cache."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from firebox.platform.accounts import AccountStore
from firebox.platform.auth import ADMIN_PRINCIPAL, DatabaseAuthenticator, Principal
from firebox.platform.db import Database
from firebox.platform.errors import PermissionDeniedError
from firebox.platform.keys import KeyStore
from firebox.platform.times import utcnow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _auth(authenticator: DatabaseAuthenticator, token: str | None) -> Principal | None:
    return asyncio.run(authenticator.authenticate(token))


@pytest.fixture
def keys(database: Database) -> KeyStore:
    accounts = AccountStore(database)
    accounts.create_account("acme")
    accounts.create_user("acme", role="user", user_id="alice")
    return KeyStore(database)


def test_database_key_maps_to_its_account_and_limits(keys: KeyStore) -> None:
    created = keys.create("acme", "alice", requests_per_minute=3, tokens_per_minute=100)
    authenticator = DatabaseAuthenticator(keys, admin_keys=("root",))
    principal = _auth(authenticator, created.key)
    assert principal == Principal("acme", created.api_key.key_id, False, 3, 100, user_id="alice", role="user")
    assert _auth(authenticator, f"Bearer {created.key}") == principal
    assert _auth(authenticator, "root") == ADMIN_PRINCIPAL
    assert _auth(authenticator, "fw_wrong") is None
    assert _auth(authenticator, None) is None


def test_expired_key_is_refused(keys: KeyStore) -> None:
    created = keys.create("acme", "alice", expire_time=utcnow() - timedelta(seconds=1))
    assert _auth(DatabaseAuthenticator(keys, admin_keys=("root",)), created.key) is None


def test_open_only_while_no_key_exists(keys: KeyStore) -> None:
    clock = FakeClock()
    authenticator = DatabaseAuthenticator(keys, cache_ttl_s=5.0, clock=clock)
    assert authenticator.is_open()
    assert _auth(authenticator, None) == ADMIN_PRINCIPAL
    assert _auth(authenticator, "anything") == ADMIN_PRINCIPAL
    keys.create("acme", "alice")
    authenticator.invalidate()
    assert not authenticator.is_open()
    assert _auth(authenticator, None) is None
    assert not DatabaseAuthenticator(keys, admin_keys=()).is_open()


def test_lookups_are_cached_until_ttl_or_invalidate(keys: KeyStore) -> None:
    clock = FakeClock()
    authenticator = DatabaseAuthenticator(keys, admin_keys=("root",), cache_ttl_s=5.0, clock=clock)
    created = keys.create("acme", "alice")
    assert _auth(authenticator, created.key) is not None
    keys.delete("acme", created.api_key.key_id)
    assert _auth(authenticator, created.key) is not None  # served from the cache
    clock.now += 6
    assert _auth(authenticator, created.key) is None  # the cache entry expired
    again = keys.create("acme", "alice")
    assert _auth(authenticator, again.key) is not None
    keys.delete("acme", again.api_key.key_id)
    authenticator.invalidate()
    assert _auth(authenticator, again.key) is None


def test_principal_access_rules() -> None:
    principal = Principal("acme", "k1")
    assert principal.can_access("acme") and not principal.can_access("other")
    with pytest.raises(PermissionDeniedError):
        principal.require_access("other")
    ADMIN_PRINCIPAL.require_access("other")
