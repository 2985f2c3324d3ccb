"""Accounts and their users: create, get, list, update; an account's rate limits."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from firebox.config import DEFAULT_ACCOUNT
from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from firebox.platform.schema import AccountRow, UserRow
from firebox.platform.times import utcnow

USER_ROLES = ("admin", "user", "contributor", "inference-user")
_RESOURCE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")


def validate_resource_id(kind: str, value: str) -> str:
    if not _RESOURCE_ID.match(value):
        raise InvalidArgumentError(
            f"invalid {kind} id {value!r}: use 1-63 lower-case letters, digits, '-', '.', '_'"
        )
    return value


MAX_RATE_LIMIT = 2**31 - 1  # the columns are 32-bit integers on PostgreSQL


def validate_rate_limit(name: str, value: int | None) -> int | None:
    """A requests- or tokens-per-minute limit: a positive integer, or `None` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT:
        raise InvalidArgumentError(f"{name} must be an integer from 1 to {MAX_RATE_LIMIT} (unset: no limit)")
    return value


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    display_name: str
    email: str
    create_time: datetime
    update_time: datetime
    requests_per_minute: int | None = None
    """For all of the account's keys together, beside each key's own limit; `None` = unlimited."""
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class User:
    account_id: str
    user_id: str
    role: str
    display_name: str
    email: str
    service_account: bool
    create_time: datetime
    update_time: datetime


def _account(row: AccountRow) -> Account:
    return Account(row.account_id, row.display_name, row.email, row.create_time, row.update_time,
                   row.requests_per_minute, row.tokens_per_minute)


def _user(row: UserRow) -> User:
    return User(row.account_id, row.user_id, row.role, row.display_name, row.email,
                row.service_account, row.create_time, row.update_time)


def user_id_from_email(email: str) -> str:
    local = re.sub(r"[^a-z0-9._-]+", "-", email.split("@", 1)[0].lower()).strip("-._")
    return local[:63] or f"user-{secrets.token_hex(4)}"


class AccountStore:
    """Accounts and users. Methods are synchronous: call them off the event loop."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def create_account(self, account_id: str, display_name: str = "", email: str = "", *,
                       requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> Account:
        validate_resource_id("account", account_id)
        validate_rate_limit("requests_per_minute", requests_per_minute)
        validate_rate_limit("tokens_per_minute", tokens_per_minute)
        now = utcnow()
        with self._db.session() as session:
            if session.get(AccountRow, account_id) is not None:
                raise AlreadyExistsError(f"account {account_id!r} already exists")
            row = AccountRow(account_id=account_id, display_name=display_name, email=email,
                             create_time=now, update_time=now, requests_per_minute=requests_per_minute,
                             tokens_per_minute=tokens_per_minute)
            session.add(row)
        return _account(row)

    def ensure_account(self, account_id: str = DEFAULT_ACCOUNT) -> Account:
        """The account, created empty if missing (the default account exists from start-up)."""
        try:
            return self.get_account(account_id)
        except NotFoundError:
            try:
                return self.create_account(account_id, display_name=account_id)
            except AlreadyExistsError:  # created concurrently by another process
                return self.get_account(account_id)

    def get_account(self, account_id: str) -> Account:
        with self._db.session() as session:
            row = session.get(AccountRow, account_id)
            if row is None:
                raise NotFoundError(f"account {account_id!r} not found")
            return _account(row)

    def list_accounts(self) -> list[Account]:
        with self._db.session() as session:
            rows = session.scalars(select(AccountRow).order_by(AccountRow.account_id))
            return [_account(row) for row in rows]

    def set_rate_limits(self, account_id: str, **limits: int | None) -> Account:
        """Set the given limits (`requests_per_minute`, `tokens_per_minute`; `None` = unlimited)."""
        if unknown := set(limits) - {"requests_per_minute", "tokens_per_minute"}:
            raise InvalidArgumentError(f"cannot set account limits {sorted(unknown)}")
        for name, value in limits.items():
            validate_rate_limit(name, value)
        with self._db.session() as session:
            row = session.get(AccountRow, account_id)
            if row is None:
                raise NotFoundError(f"account {account_id!r} not found")
            for name, value in limits.items():
                setattr(row, name, value)
            row.update_time = utcnow()
        return _account(row)

    def create_user(self, account_id: str, *, role: str, user_id: str | None = None,
                    display_name: str = "", email: str = "", service_account: bool = False) -> User:
        if role not in USER_ROLES:
            raise InvalidArgumentError(f"role must be one of {USER_ROLES}, got {role!r}")
        user_id = validate_resource_id("user", user_id or user_id_from_email(email or "user"))
        now = utcnow()
        with self._db.session() as session:
            if session.get(AccountRow, account_id) is None:
                raise NotFoundError(f"account {account_id!r} not found")
            if session.get(UserRow, (account_id, user_id)) is not None:
                raise AlreadyExistsError(f"user {user_id!r} already exists in account {account_id!r}")
            row = UserRow(account_id=account_id, user_id=user_id, role=role, display_name=display_name,
                          email=email, service_account=service_account, create_time=now, update_time=now)
            session.add(row)
        return _user(row)

    def ensure_user(self, account_id: str, user_id: str, role: str = "admin") -> User:
        try:
            return self.get_user(account_id, user_id)
        except NotFoundError:
            return self.create_user(account_id, role=role, user_id=user_id, display_name=user_id)

    def get_user(self, account_id: str, user_id: str) -> User:
        with self._db.session() as session:
            row = session.get(UserRow, (account_id, user_id))
            if row is None:
                raise NotFoundError(f"user {user_id!r} not found in account {account_id!r}")
            return _user(row)

    def list_users(self, account_id: str) -> list[User]:
        self.get_account(account_id)
        with self._db.session() as session:
            query = select(UserRow).where(UserRow.account_id == account_id).order_by(UserRow.user_id)
            return [_user(row) for row in session.scalars(query)]

    def update_user(self, account_id: str, user_id: str, **fields: object) -> User:
        """Set the given fields (`role`, `display_name`, `email`, `service_account`)."""
        allowed = {"role", "display_name", "email", "service_account"}
        if unknown := set(fields) - allowed:
            raise InvalidArgumentError(f"cannot update user fields {sorted(unknown)}")
        if "role" in fields and fields["role"] not in USER_ROLES:
            raise InvalidArgumentError(f"role must be one of {USER_ROLES}")
        with self._db.session() as session:
            row = session.get(UserRow, (account_id, user_id))
            if row is None:
                raise NotFoundError(f"user {user_id!r} not found in account {account_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            row.update_time = utcnow()
        return _user(row)
