"""Stored responses on SQLite and PostgreSQL: save / update, account isolation, delete, paging,
and the async store's ordering (a write queued by a cancelled waiter still lands)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import inspect

from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError
from firebox.platform.sql_response_store import ResponseTable, SqlResponseStore
from firebox.platform.services import Platform
from firebox.serving.response_store_interface import InMemoryResponseStore

ITEMS = [{"id": "msg_1", "type": "message", "role": "user", "status": "completed",
          "content": [{"type": "input_text", "text": "Hello"}]}]  # fmt: skip


def body(response_id: str, status: str = "completed", **extra: object) -> dict:
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
            "model": "accounts/fireworks/models/m", "previous_response_id": None, "output": [], **extra}  # fmt: skip


def test_migration_creates_the_responses_table(database: Database) -> None:
    columns = {c["name"] for c in inspect(database.engine).get_columns("responses")}
    assert {"response_id", "account_id", "previous_response_id", "status", "created", "body", "input_items"} <= columns


def test_save_update_get_and_isolation(database: Database) -> None:
    table = ResponseTable(database)
    table.save("acme", body("resp_a", "in_progress", metadata={"k": "v"}), ITEMS)
    assert table.get("acme", "resp_a")["status"] == "in_progress"
    table.save("acme", body("resp_a", "completed", metadata={"k": "v"}), [])  # the items stay as first saved
    assert table.get("acme", "resp_a")["status"] == "completed"
    assert table.get("acme", "resp_a")["metadata"] == {"k": "v"}
    assert table.get_input_items("acme", "resp_a") == ITEMS
    assert table.get("other", "resp_a") is None and table.get_input_items("other", "resp_a") is None
    with pytest.raises(AlreadyExistsError):
        table.save("other", body("resp_a"), ITEMS)
    assert not table.delete("other", "resp_a")
    assert table.delete("acme", "resp_a") and table.get("acme", "resp_a") is None
    assert not table.delete("acme", "resp_a")


def _ids(page: tuple[list[dict], bool]) -> tuple[list[str], bool]:
    return [b["id"] for b in page[0]], page[1]


IDS = [f"resp_{i}" for i in range(5)]


def _check_paging(list_page) -> None:
    """Five responses of "acme" (oldest first) and one of "other", listed through `list_page`."""
    assert _ids(list_page("acme", 2)) == (["resp_4", "resp_3"], True)
    assert _ids(list_page("acme", 2, after="resp_3")) == (["resp_2", "resp_1"], True)
    assert _ids(list_page("acme", 2, after="resp_1")) == (["resp_0"], False)
    assert _ids(list_page("acme", 2, before="resp_1")) == (["resp_3", "resp_2"], True)
    assert _ids(list_page("acme", 10, order="asc")) == (IDS, False)
    assert _ids(list_page("acme", 2, after="resp_1", order="asc")) == (["resp_2", "resp_3"], True)
    assert _ids(list_page("acme", 2, before="resp_3", order="asc")) == (["resp_1", "resp_2"], True)
    assert _ids(list_page("other", 10)) == (["resp_x"], False)
    with pytest.raises(ValueError):
        list_page("acme", 2, after="resp_x")  # another account's id is no cursor here


def test_list_pages_both_ways(database: Database) -> None:
    table = ResponseTable(database)
    for response_id in IDS:
        table.save("acme", body(response_id), ITEMS)
    table.save("other", body("resp_x"), ITEMS)
    _check_paging(table.list)


def test_the_in_memory_store_pages_as_the_sql_one_does() -> None:
    memory = InMemoryResponseStore()

    async def fill() -> None:
        for response_id in IDS:
            await memory.save("acme", body(response_id), ITEMS)
        await memory.save("other", body("resp_x"), ITEMS)

    asyncio.run(fill())
    _check_paging(lambda *args, **kwargs: asyncio.run(memory.list(*args, **kwargs)))


def test_async_store_keeps_order_and_survives_a_cancelled_waiter(database: Database) -> None:
    store = SqlResponseStore(database)

    async def scenario() -> tuple[dict | None, dict | None]:
        await store.save("acme", body("resp_a", "in_progress"), ITEMS)
        waiter = asyncio.ensure_future(store.save("acme", body("resp_a", "cancelled"), ITEMS))
        waiter.cancel()  # the request went away: the write must still land
        store.save("acme", body("resp_b", "completed"), ITEMS)  # queued, never awaited
        return await store.get("acme", "resp_a"), await store.get("acme", "resp_b")

    try:
        first, second = asyncio.run(scenario())
    finally:
        store.close()
    assert first["status"] == "cancelled" and second["status"] == "completed"


def test_platform_opens_the_store_and_flushes_it_at_close(data_dir, database_url) -> None:
    platform = Platform.open(data_dir, database_url)

    async def queue_without_waiting() -> None:
        platform.responses.save("fireworks", body("resp_z"), ITEMS)

    asyncio.run(queue_without_waiting())
    platform.close()
    reopened = Database.open(data_dir, database_url)
    try:
        assert ResponseTable(reopened).get("fireworks", "resp_z")["status"] == "completed"
    finally:
        reopened.close()
