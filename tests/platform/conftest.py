"""Fixtures of the platform tests: every storage fixture runs on SQLite and on PostgreSQL.

PostgreSQL comes from `FIREBOX_TEST_POSTGRES_URL` (CI sets it with
`eval "$(scripts/ci_postgres.sh)"`); each test gets an empty `public` schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_helpers import ADMIN_KEY
from sqlalchemy import text

from firebox.platform.db import Database, create_db_engine, resolve_database_url
from firebox.platform.services import Platform

POSTGRES_ENV = "FIREBOX_TEST_POSTGRES_URL"


def _reset_postgres(url: str) -> None:
    engine = create_db_engine(resolve_database_url(Path("."), url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """`None` (SQLite in the test's data dir) or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f'{POSTGRES_ENV} is unset: run `eval "$(scripts/ci_postgres.sh)"` to test PostgreSQL')
    _reset_postgres(url)
    return url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def database(data_dir: Path, database_url: str | None) -> Iterator[Database]:
    database = Database.open(data_dir, database_url)
    yield database
    database.close()


@pytest.fixture
def platform(data_dir: Path, database_url: str | None) -> Iterator[Platform]:
    services = Platform.open(data_dir, database_url, admin_keys=(ADMIN_KEY,))
    yield services
    services.close()
