"""Who is asking: API key -> principal.

`Authenticator` is the seam for the platform's key store (hashed keys in SQL); the static
implementation here serves `ServerConfig.api_keys` and, when there are none, open access.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from firebox.config import DEFAULT_ACCOUNT


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    key_id: str | None = None  # None under open access
    is_admin: bool = False  # the operator: may use and manage every account's resources


class Authenticator(Protocol):
    """Resolves the bearer token of a request (None when the header is missing). An
    implementation may also have `is_open() -> bool`, which the start-up log reports."""

    async def authenticate(self, token: str | None) -> Principal | None:
        """The principal the token belongs to, or None to answer 401."""
        ...


def key_id_of(key: str) -> str:
    """A stable, non-secret id for a key: what request records and logs show."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class StaticKeyAuthenticator:
    """Keys from the command line or `FIREBOX_API_KEY`: the operator's, admin of every account."""

    def __init__(self, keys: Iterable[str] = (), account_id: str = DEFAULT_ACCOUNT) -> None:
        self._keys = tuple(k for k in keys if k)
        self._account_id = account_id

    def is_open(self) -> bool:
        """True when every request is let in (the server says so at start)."""
        return not self._keys

    async def authenticate(self, token: str | None) -> Principal | None:
        if self.is_open():
            return Principal(self._account_id, is_admin=True)
        if token is None:
            return None
        # compare against every key, in constant time each, so timing tells nothing
        matches = [hmac.compare_digest(token.encode(), key.encode()) for key in self._keys]
        if not any(matches):
            return None
        return Principal(self._account_id, key_id_of(token), is_admin=True)
