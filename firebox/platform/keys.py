"""API keys: `fw_` + random, stored as a SHA-256 hash plus a display prefix, shown once."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from firebox.platform.accounts import validate_rate_limit
from firebox.platform.db import Database
from firebox.platform.errors import NotFoundError
from firebox.platform.schema import AccountRow, ApiKeyRow, UserRow
from firebox.platform.times import utcnow

KEY_PREFIX = "fw_"
_KEY_ALPHABET = string.ascii_letters + string.digits
_KEY_RANDOM_CHARS = 40
_DISPLAY_PREFIX_CHARS = 10


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(_KEY_RANDOM_CHARS))


def hash_key(key: str) -> str:
    """SHA-256 hex digest: keys are long random strings, so a fast unsalted hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    account_id: str
    user_id: str
    display_name: str
    prefix: str
    create_time: datetime
    expire_time: datetime | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    role: str | None = None  # the role of the key's user (`find_by_key` reads it; None elsewhere)
    account_requests_per_minute: int | None = None  # the account's limits, for all its keys together
    account_tokens_per_minute: int | None = None  # (`find_by_key` reads them; None elsewhere)

    def is_expired(self, now: datetime) -> bool:
        return self.expire_time is not None and self.expire_time <= now


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """What `KeyStore.create` returns: the record and the plain key, which is never stored."""

    api_key: ApiKey
    key: str


def _api_key(row: ApiKeyRow, role: str | None = None, account_rpm: int | None = None,
             account_tpm: int | None = None) -> ApiKey:
    return ApiKey(row.key_id, row.account_id, row.user_id, row.display_name, row.prefix, row.create_time,
                  row.expire_time, row.requests_per_minute, row.tokens_per_minute, role, account_rpm, account_tpm)


class KeyStore:
    """API keys of users. Methods are synchronous: call them off the event loop."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def create(self, account_id: str, user_id: str, *, display_name: str = "default",
               expire_time: datetime | None = None, requests_per_minute: int | None = None,
               tokens_per_minute: int | None = None) -> CreatedKey:
        validate_rate_limit("requests_per_minute", requests_per_minute)
        validate_rate_limit("tokens_per_minute", tokens_per_minute)
        key = generate_key()
        row = ApiKeyRow(key_id=secrets.token_hex(8), account_id=account_id, user_id=user_id,
                        display_name=display_name or "default", key_hash=hash_key(key),
                        prefix=key[:_DISPLAY_PREFIX_CHARS], create_time=utcnow(),
                        expire_time=expire_time, requests_per_minute=requests_per_minute,
                        tokens_per_minute=tokens_per_minute)
        with self._db.session() as session:
            if session.get(UserRow, (account_id, user_id)) is None:
                raise NotFoundError(f"user {user_id!r} not found in account {account_id!r}")
            session.add(row)
        return CreatedKey(_api_key(row), key)

    def list(self, account_id: str, user_id: str | None = None) -> list[ApiKey]:
        query = select(ApiKeyRow).where(ApiKeyRow.account_id == account_id)
        if user_id is not None:
            query = query.where(ApiKeyRow.user_id == user_id)
        with self._db.session() as session:
            rows = session.scalars(query.order_by(ApiKeyRow.create_time, ApiKeyRow.key_id))
            return [_api_key(row) for row in rows]

    def delete(self, account_id: str, key_id: str, user_id: str | None = None) -> None:
        query = delete(ApiKeyRow).where(ApiKeyRow.account_id == account_id, ApiKeyRow.key_id == key_id)
        if user_id is not None:
            query = query.where(ApiKeyRow.user_id == user_id)
        with self._db.session() as session:
            if session.execute(query).rowcount == 0:
                raise NotFoundError(f"API key {key_id!r} not found in account {account_id!r}")

    def find_by_key(self, key: str) -> ApiKey | None:
        """The key whose hash matches, expired or not (the caller decides), with its user's role and
        its account's rate limits."""
        owner = (UserRow.account_id == ApiKeyRow.account_id) & (UserRow.user_id == ApiKeyRow.user_id)
        query = (select(ApiKeyRow, UserRow.role, AccountRow.requests_per_minute, AccountRow.tokens_per_minute)
                 .outerjoin(UserRow, owner).outerjoin(AccountRow, AccountRow.account_id == ApiKeyRow.account_id)
                 .where(ApiKeyRow.key_hash == hash_key(key)))  # fmt: skip
        with self._db.session() as session:
            found = session.execute(query).first()
            return None if found is None else _api_key(*found)

    def has_keys(self) -> bool:
        with self._db.session() as session:
            return session.scalar(select(ApiKeyRow.key_id).limit(1)) is not None
