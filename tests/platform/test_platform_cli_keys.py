"""`firebox keys create/list/delete` through typer's CliRunner, on both databases."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from firebox.cli_keys import keys_app
from firebox.platform.db import Database
from firebox.platform.keys import KeyStore


def _invoke(*args: str, data_dir: Path, database_url: str | None):
    location = ["--data-dir", str(data_dir)] + (["--database-url", database_url] if database_url else [])
    return CliRunner().invoke(keys_app, [*args, *location])


def test_create_list_delete(data_dir: Path, database_url: str | None) -> None:
    created = _invoke("create", "--account", "acme", "--name", "laptop", "--rpm", "30",
                      data_dir=data_dir, database_url=database_url)
    assert created.exit_code == 0, created.output
    key = re.search(r"key:\s+(fw_\w+)", created.output).group(1)
    key_id = re.search(r"key_id:\s+(\w+)", created.output).group(1)

    database = Database.open(data_dir, database_url)
    stored = KeyStore(database).find_by_key(key)
    database.close()
    assert (stored.key_id, stored.account_id, stored.display_name, stored.requests_per_minute) == (
        key_id, "acme", "laptop", 30)

    listed = _invoke("list", "--account", "acme", data_dir=data_dir, database_url=database_url)
    assert listed.exit_code == 0
    assert key_id in listed.output and key[:10] in listed.output and key not in listed.output
    assert key_id not in _invoke("list", data_dir=data_dir, database_url=database_url).output  # other account

    deleted = _invoke("delete", key_id, "--account", "acme", data_dir=data_dir, database_url=database_url)
    assert deleted.exit_code == 0
    assert key_id not in _invoke("list", "--account", "acme", data_dir=data_dir, database_url=database_url).output
    again = _invoke("delete", key_id, "--account", "acme", data_dir=data_dir, database_url=database_url)
    assert again.exit_code == 1 and "not found" in again.output


def test_create_rejects_bad_input(data_dir: Path, database_url: str | None) -> None:
    bad_account = _invoke("create", "--account", "Bad Name", data_dir=data_dir, database_url=database_url)
    assert bad_account.exit_code == 1 and "invalid account id" in bad_account.output
    bad_time = _invoke("create", "--expire-time", "soon", data_dir=data_dir, database_url=database_url)
    assert bad_time.exit_code == 1 and "invalid time" in bad_time.output
