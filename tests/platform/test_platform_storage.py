"""Storage on SQLite and PostgreSQL: migrations, accounts, users, keys."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from firebox.platform import migrations
from firebox.platform.accounts import AccountStore
from firebox.platform.db import Database, resolve_database_url
from firebox.platform.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from firebox.platform.keys import KeyStore, hash_key
from firebox.platform.schema import ApiKeyRow
from firebox.platform.times import utcnow


def test_migrations_create_every_table_and_rerun_cleanly(database: Database) -> None:
    tables = set(inspect(database.engine).get_table_names())
    assert {"accounts", "users", "api_keys", "usage_records", "alembic_version"} <= tables
    database.upgrade()  # already at head: a no-op, not an error
    head = ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()  # one head: a linear history
    with database.engine.connect() as connection:
        assert connection.execute(text("select version_num from alembic_version")).scalar() == head


def test_revision_0005_adds_account_limits_to_a_database_made_at_0004(data_dir, database_url) -> None:
    from alembic import command
    from alembic.config import Config

    database = Database(resolve_database_url(data_dir, database_url))
    try:
        database.upgrade("0004")
        with database.engine.begin() as connection:
            connection.execute(text("INSERT INTO accounts (account_id, display_name, email, create_time, update_time) "
                                    "VALUES ('acme', 'Acme', '', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"))
            connection.execute(text("INSERT INTO users (account_id, user_id, role, display_name, email, "
                                    "service_account, create_time, update_time) VALUES ('acme', 'alice', 'admin', "
                                    "'', '', false, '2025-01-01 00:00:00', '2025-01-01 00:00:00')"))  # fmt: skip
        database.upgrade()
        accounts = AccountStore(database)
        old = accounts.get_account("acme")
        assert (old.display_name, old.requests_per_minute, old.tokens_per_minute) == ("Acme", None, None)
        limited = accounts.set_rate_limits("acme", requests_per_minute=10, tokens_per_minute=1000)
        assert accounts.get_account("acme") == limited and limited.tokens_per_minute == 1000
        created = KeyStore(database).create("acme", "alice")
        found = KeyStore(database).find_by_key(created.key)
        assert (found.account_requests_per_minute, found.account_tokens_per_minute) == (10, 1000)

        config = Config()
        config.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        assert "requests_per_minute" not in {c["name"] for c in inspect(database.engine).get_columns("accounts")}
        with database.engine.connect() as connection:  # the users were not dropped with the column (no
            assert connection.execute(text("select count(*) from users")).scalar() == 1  # table copy under FKs)
        database.upgrade()
        assert accounts.get_account("acme").requests_per_minute is None
    finally:
        database.close()


def test_account_limits_are_validated_in_the_store(database: Database) -> None:
    accounts = AccountStore(database)
    accounts.create_account("acme", requests_per_minute=5)
    for bad in ({"requests_per_minute": 0}, {"tokens_per_minute": -3}, {"tokens_per_minute": 2**31},
                {"requests_per_minute": True}, {"display_name": "x"}):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            accounts.set_rate_limits("acme", **bad)
    with pytest.raises(InvalidArgumentError):
        accounts.create_account("beta", tokens_per_minute=0)
    with pytest.raises(NotFoundError):
        accounts.set_rate_limits("nobody", requests_per_minute=1)
    assert accounts.set_rate_limits("acme", requests_per_minute=None).requests_per_minute is None


def test_sqlite_default_lives_in_data_dir_with_wal(tmp_path) -> None:
    assert resolve_database_url(tmp_path, None) == f"sqlite:///{tmp_path / 'firebox.db'}"
    assert resolve_database_url(tmp_path, "postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert resolve_database_url(tmp_path, "postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    database = Database.open(tmp_path)
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() > 0
    database.close()
    assert (tmp_path / "firebox.db").exists()


def test_accounts_and_users_crud(database: Database) -> None:
    accounts = AccountStore(database)
    created = accounts.create_account("acme", "Acme", "ops@acme.test")
    assert accounts.get_account("acme") == created
    with pytest.raises(AlreadyExistsError):
        accounts.create_account("acme")
    with pytest.raises(InvalidArgumentError):
        accounts.create_account("Not Valid!")
    assert [a.account_id for a in accounts.list_accounts()] == ["acme"]

    alice = accounts.create_user("acme", role="user", email="Alice.Smith@acme.test")
    assert alice.user_id == "alice.smith"
    bob = accounts.create_user("acme", role="admin", user_id="bob", display_name="Bob")
    assert [u.user_id for u in accounts.list_users("acme")] == ["alice.smith", "bob"]
    with pytest.raises(AlreadyExistsError):
        accounts.create_user("acme", role="user", user_id="bob")
    with pytest.raises(InvalidArgumentError):
        accounts.create_user("acme", role="overlord", user_id="carol")
    with pytest.raises(NotFoundError):
        accounts.create_user("nobody", role="user", user_id="carol")

    updated = accounts.update_user("acme", "bob", role="inference-user", display_name="Robert")
    assert (updated.role, updated.display_name) == ("inference-user", "Robert")
    assert updated.update_time >= bob.update_time
    assert accounts.get_user("acme", "bob") == updated
    with pytest.raises(NotFoundError):
        accounts.get_user("acme", "zed")


def test_keys_are_stored_hashed_and_found_by_hash(database: Database) -> None:
    accounts, keys = AccountStore(database), KeyStore(database)
    accounts.create_account("acme")
    accounts.create_user("acme", role="user", user_id="alice")
    created = keys.create("acme", "alice", display_name="ci", requests_per_minute=5)
    assert created.key.startswith("fw_") and len(created.key) > 30
    assert created.key.startswith(created.api_key.prefix)
    with database.session() as session:
        row = session.scalar(select(ApiKeyRow))
        assert row.key_hash == hash_key(created.key)
        assert created.key not in (row.key_hash, row.prefix)
    assert keys.find_by_key(created.key) == dataclasses.replace(created.api_key, role="user")  # with its user's role
    assert keys.find_by_key(created.key + "x") is None
    assert keys.find_by_key("fw_unknown") is None
    assert created.api_key.requests_per_minute == 5


def test_key_list_delete_and_expiry(database: Database) -> None:
    accounts, keys = AccountStore(database), KeyStore(database)
    for account in ("acme", "other"):
        accounts.create_account(account)
        accounts.create_user(account, role="user", user_id="alice")
    past = utcnow() - timedelta(minutes=1)
    first = keys.create("acme", "alice", display_name="one", expire_time=past)
    second = keys.create("acme", "alice", display_name="two")
    keys.create("other", "alice")
    assert [k.key_id for k in keys.list("acme")] == [first.api_key.key_id, second.api_key.key_id]
    assert first.api_key.is_expired(utcnow()) and not second.api_key.is_expired(utcnow())
    with pytest.raises(NotFoundError):
        keys.delete("other", first.api_key.key_id)  # another account's key
    keys.delete("acme", first.api_key.key_id)
    assert [k.key_id for k in keys.list("acme")] == [second.api_key.key_id]
    assert keys.find_by_key(first.key) is None
    with pytest.raises(NotFoundError):
        keys.create("acme", "nobody")
    with pytest.raises(InvalidArgumentError):
        keys.create("acme", "alice", tokens_per_minute=0)


def test_models_match_the_migrations(database: Database) -> None:
    """A change to schema.py without a migration (or the reverse) shows up here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from firebox.platform.schema import Base

    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
