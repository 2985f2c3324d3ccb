"""`Platform`: every platform service, opened together at start-up and closed at shutdown."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from firebox.config import DEFAULT_ACCOUNT
from firebox.platform.accounts import AccountStore
from firebox.platform.auth import DatabaseAuthenticator
from firebox.platform.data_dir_lock import DataDirLock
from firebox.platform.db import Database
from firebox.platform.keys import KeyStore
from firebox.platform.prometheus import PlatformMetrics
from firebox.platform.rate_limit import RateLimiter
from firebox.platform.sql_response_store import SqlResponseStore
from firebox.platform.usage import UsageRecorder
from firebox.platform.usage_query import UsageQuery
from firebox.request_record import RequestRecord


@dataclass(frozen=True, slots=True)
class Platform:
    database: Database
    accounts: AccountStore
    keys: KeyStore
    authenticator: DatabaseAuthenticator
    usage: UsageRecorder
    usage_query: UsageQuery
    rate_limiter: RateLimiter
    metrics: PlatformMetrics
    responses: SqlResponseStore
    lock: DataDirLock

    @classmethod
    def open(cls, data_dir: Path, database_url: str | None = None, admin_keys: Sequence[str] = (),
             usage_fsync_s: float | None = None, responses_ttl_s: float | None = None) -> Platform:
        """Lock the data directory (DataDirInUseError if another server has it), migrate the
        database, make sure the default account exists, replay the usage journal and start the
        usage writer (`usage_fsync_s`: see `Journal`); stored responses are kept `responses_ttl_s`
        (None: forever). Blocking: call it before the event loop serves requests."""
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        lock = DataDirLock.acquire(data_dir)
        try:
            database = Database.open(data_dir, database_url)
            accounts = AccountStore(database)
            accounts.ensure_account(DEFAULT_ACCOUNT)
            keys = KeyStore(database)
            usage = UsageRecorder(database, data_dir, fsync_interval_s=usage_fsync_s)
            usage.start()
        except BaseException:
            lock.release()
            raise
        return cls(database=database, accounts=accounts, keys=keys,
                   authenticator=DatabaseAuthenticator(keys, admin_keys), usage=usage,
                   usage_query=UsageQuery(database), rate_limiter=RateLimiter(),
                   metrics=PlatformMetrics(), responses=SqlResponseStore(database, responses_ttl_s), lock=lock)

    def completion_callbacks(self) -> list[Callable[[RequestRecord], None]]:
        """What serving calls with each finished `RequestRecord`: usage row, metrics, token limit
        (the server passes `usage` as the app's ledger instead, and `observers()` as callbacks)."""
        return [self.usage.record, *self.observers()]

    def observers(self) -> list[Callable[[RequestRecord], None]]:
        """The callbacks besides usage: metrics, token limit."""
        return [self.metrics.observe_request, self.rate_limiter.observe_request]

    def close(self) -> None:
        """Flush queued usage records and stored-response writes, then release the database."""
        self.usage.close()
        self.responses.close()
        self.database.close()
        self.lock.release()
