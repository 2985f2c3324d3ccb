"""`firebox keys`: create, list and delete API keys in the platform database.

Mounted into the main CLI with `app.add_typer(keys_app, name="keys")`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from firebox.config import DEFAULT_ACCOUNT, ServerConfig

if TYPE_CHECKING:  # SQLAlchemy is imported by the commands that use it, not by every `firebox` run
    from firebox.platform.db import Database
    from firebox.platform.keys import ApiKey

keys_app = typer.Typer(help="Manage API keys (stored hashed; a key is shown once, at creation).",
                       no_args_is_help=True)

DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: ~/.firebox).")]
DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", help="SQLAlchemy URL (default: FIREBOX_DATABASE_URL, else SQLite in the data dir).")]
AccountOption = Annotated[str, typer.Option("--account", help="Account id.")]


@contextmanager
def _database(data_dir: Path | None, database_url: str | None) -> Iterator[Database]:
    from firebox.platform.db import Database
    from firebox.platform.errors import PlatformError

    defaults = ServerConfig()
    data_dir = data_dir or defaults.data_dir
    database = Database.open(data_dir, database_url or defaults.database_url)
    try:
        yield database
    except PlatformError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        database.close()


@keys_app.command("create")
def create_key(
    account: AccountOption = DEFAULT_ACCOUNT,
    user: Annotated[str, typer.Option("--user", help="User id in the account (created if missing).")] = "default",
    name: Annotated[str, typer.Option("--name", help="Display name of the key.")] = "default",
    expire_time: Annotated[str | None, typer.Option("--expire-time", help="RFC 3339 expiry (default: never).")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute (default: unlimited).")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (default: unlimited).")] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create a key; the account and user are created if they do not exist."""
    from firebox.platform.accounts import AccountStore
    from firebox.platform.keys import KeyStore
    from firebox.platform.times import parse_time

    with _database(data_dir, database_url) as database:
        accounts = AccountStore(database)
        accounts.ensure_account(account)
        accounts.ensure_user(account, user)
        created = KeyStore(database).create(account, user, display_name=name, expire_time=parse_time(expire_time),
                                            requests_per_minute=rpm, tokens_per_minute=tpm)
    typer.echo(f"key_id: {created.api_key.key_id}")
    typer.echo(f"key:    {created.key}")
    typer.echo("Store the key now: it is not shown again.", err=True)


def _row(api_key: ApiKey) -> str:
    from firebox.platform.times import format_time

    expires = format_time(api_key.expire_time) if api_key.expire_time else "never"
    limits = f"rpm={api_key.requests_per_minute or '-'} tpm={api_key.tokens_per_minute or '-'}"
    return "\t".join((api_key.key_id, api_key.prefix + "…", api_key.user_id, api_key.display_name,
                      format_time(api_key.create_time), expires, limits))


@keys_app.command("list")
def list_keys(account: AccountOption = DEFAULT_ACCOUNT, data_dir: DataDirOption = None,
              database_url: DatabaseOption = None) -> None:
    """List the keys of an account (prefixes only: the keys themselves are not stored)."""
    from firebox.platform.keys import KeyStore

    with _database(data_dir, database_url) as database:
        keys = KeyStore(database).list(account)
    typer.echo("\t".join(("KEY_ID", "PREFIX", "USER", "NAME", "CREATED", "EXPIRES", "LIMITS")))
    for api_key in keys:
        typer.echo(_row(api_key))


@keys_app.command("delete")
def delete_key(key_id: Annotated[str, typer.Argument(help="The key id shown by `create` and `list`.")],
               account: AccountOption = DEFAULT_ACCOUNT, data_dir: DataDirOption = None,
               database_url: DatabaseOption = None) -> None:
    """Delete a key; requests with it are refused within seconds."""
    from firebox.platform.keys import KeyStore

    with _database(data_dir, database_url) as database:
        KeyStore(database).delete(account, key_id)
    typer.echo(f"deleted {key_id}")
