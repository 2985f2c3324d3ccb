"""Who is calling: API key -> `Principal`, with a short cache so auth is not a DB query per request."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from firebox.config import DEFAULT_ACCOUNT
from firebox.platform.errors import PermissionDeniedError
from firebox.platform.keys import ApiKey, KeyStore, hash_key
from firebox.platform.times import utcnow

_MAX_CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. Compatible with `firebox.api.deps.Principal` (account_id, key_id) and adds the
    admin flag, the key's rate limits and its account's (`None` = unlimited), read by `RateLimiter`."""

    account_id: str
    key_id: str | None
    is_admin: bool = False
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    user_id: str | None = None  # the key's user (None: the operator's keys, open access)
    role: str | None = None  # that user's role in the account: "admin" manages it
    expire_time: datetime | None = None  # when the key expires (None: never)
    account_requests_per_minute: int | None = None  # for all of the account's keys together
    account_tokens_per_minute: int | None = None

    def can_access(self, account_id: str) -> bool:
        return self.is_admin or self.account_id == account_id

    def require_access(self, account_id: str) -> None:
        if not self.can_access(account_id):
            raise PermissionDeniedError(f"this API key may not access account {account_id!r}")

    def require_account_admin(self, account_id: str, action: str) -> None:
        """Users, roles and other users' keys are for the account's admins (and the operator)."""
        self.require_access(account_id)
        if not self.is_admin and self.role != "admin":
            raise PermissionDeniedError(f"only an admin of account {account_id!r} may {action}")

    def require_self_or_account_admin(self, account_id: str, user_id: str, action: str) -> None:
        """A user's own keys are theirs to manage; another user's, the account admins'."""
        self.require_access(account_id)
        if self.is_admin or self.role == "admin" or self.user_id == user_id:
            return
        raise PermissionDeniedError(f"only user {user_id!r} or an admin of account {account_id!r} may {action}")


ADMIN_PRINCIPAL = Principal(account_id=DEFAULT_ACCOUNT, key_id=None, is_admin=True)


class Authenticator(Protocol):
    """Turns the bearer token of a request into a principal, or `None` when it is not accepted."""

    async def authenticate(self, token: str | None) -> Principal | None: ...


@dataclass(slots=True)
class _CacheEntry:
    api_key: ApiKey | None
    fetched_at: float


def _principal_for(api_key: ApiKey) -> Principal:
    return Principal(account_id=api_key.account_id, key_id=api_key.key_id,
                     requests_per_minute=api_key.requests_per_minute,
                     tokens_per_minute=api_key.tokens_per_minute, user_id=api_key.user_id,
                     role=api_key.role, expire_time=api_key.expire_time,
                     account_requests_per_minute=api_key.account_requests_per_minute,
                     account_tokens_per_minute=api_key.account_tokens_per_minute)


class DatabaseAuthenticator:
    """Accepts the static admin keys (`--api-key`) and live keys from the database.

    With no admin key and no key in the database the server is open: every request is the admin
    principal (for inference only: the control plane refuses an open server; the first keys come
    from `firebox keys create`). Lookups are cached for
    `cache_ttl_s` (positive and negative); `invalidate()` drops the cache after a key changes.
    """

    def __init__(self, keys: KeyStore, admin_keys: Sequence[str] = (), cache_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._admin_keys = tuple(k for k in admin_keys if k)
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, _CacheEntry] = {}
        self._open_checked_at: float | None = None
        self._is_open = False

    async def authenticate(self, token: str | None) -> Principal | None:
        token = (token or "").removeprefix("Bearer ").strip()
        if token and self._is_admin_key(token):
            return ADMIN_PRINCIPAL
        if token:
            api_key = await self._lookup(token)
            if api_key is not None and not api_key.is_expired(utcnow()):
                return _principal_for(api_key)
        is_open = self._is_open if self._open_is_fresh() else await asyncio.to_thread(self.is_open)
        return ADMIN_PRINCIPAL if is_open else None

    def is_open(self) -> bool:
        """True while no key at all is configured (cached like lookups; blocking)."""
        if not self._open_is_fresh():
            self._is_open = not self._admin_keys and not self._keys.has_keys()
            self._open_checked_at = self._clock()
        return self._is_open

    def _open_is_fresh(self) -> bool:
        checked = self._open_checked_at
        return checked is not None and self._clock() - checked <= self._ttl

    def invalidate(self) -> None:
        self._cache.clear()
        self._open_checked_at = None

    def _is_admin_key(self, token: str) -> bool:
        return any(hmac.compare_digest(token.encode(), key.encode()) for key in self._admin_keys)

    async def _lookup(self, token: str) -> ApiKey | None:
        digest = hash_key(token)
        entry = self._cache.get(digest)
        now = self._clock()
        if entry is None or now - entry.fetched_at > self._ttl:
            api_key = await asyncio.to_thread(self._keys.find_by_key, token)
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.clear()
            entry = self._cache[digest] = _CacheEntry(api_key, now)
        return entry.api_key
