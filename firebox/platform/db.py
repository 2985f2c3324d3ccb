"""The platform database: engine, sessions and schema migrations.

SQLite in `<data_dir>/firebox.db` by default (WAL, so readers never block the usage writer, and a
busy timeout, so concurrent writers wait instead of failing); PostgreSQL when a URL is given.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0


def _postgres_driver() -> str:
    """The PostgreSQL driver that is installed: psycopg2 (the tested one) first, then psycopg 3."""
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise ValueError("PostgreSQL needs a driver: pip install psycopg2-binary")


def resolve_database_url(data_dir: Path, database_url: str | None) -> str:
    """`database_url` if given, else SQLite in `data_dir`. A PostgreSQL URL without a driver
    (`postgres://` or `postgresql://`) gets the one that is installed."""
    if not database_url:
        return f"sqlite:///{Path(data_dir) / 'firebox.db'}"
    scheme, sep, rest = database_url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"postgresql+{_postgres_driver()}://{rest}"
    return database_url


def _set_sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Owns the SQLAlchemy engine; `session()` is a unit of work that commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, data_dir: Path, database_url: str | None = None) -> Database:
        """Connect and bring the schema to the newest migration."""
        database = cls(resolve_database_url(data_dir, database_url))
        database.upgrade()
        return database

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def upgrade(self, revision: str = "head") -> None:
        """Run Alembic migrations programmatically (no alembic.ini needed)."""
        # Alembic's plugin and revision lines (logged as it loads and upgrades) would bury the
        # server's own start-up log; its warnings still show.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
