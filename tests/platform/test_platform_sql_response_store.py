"""Stored responses on SQLite and PostgreSQL: save / update, account isolation, delete, paging,
the async store's ordering (a write queued by a cancelled waiter still lands), chains stored a
turn per row, deleting inside a chain, retention, and rows from before the chains."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select

from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError
from firebox.platform.schema import ResponseRow
from firebox.platform.sql_response_store import ResponseTable, SqlResponseStore
from firebox.platform.services import Platform
from firebox.serving.responses.store import InMemoryResponseStore, conversation_items

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
    assert [turn.input_items for turn in table.get_chain("acme", "resp_a", 10)] == [ITEMS]
    assert table.get("other", "resp_a") is None and table.get_chain("other", "resp_a", 10) is None
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


def _item(text: str) -> dict:
    return {"id": f"msg_{text}", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}  # fmt: skip


def _output(text: str) -> list[dict]:
    return [{"id": f"out_{text}", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": text, "annotations": []}]}]  # fmt: skip


def _save_chain(table: ResponseTable, account: str, names: list[str], created_at: int | None = None) -> None:
    """resp_<name> for each name, each continuing the one before, with one input item and one output."""
    previous = None
    for name in names:
        extra = {} if created_at is None else {"created_at": created_at}
        reply = body(f"resp_{name}", previous_response_id=previous, output=_output(name), **extra)
        table.save(account, reply, [_item(name)])
        previous = f"resp_{name}"


def _stored_items(database: Database) -> dict[str, list]:
    with database.session() as session:
        return {row.response_id: row.input_items for row in session.scalars(select(ResponseRow))}


def test_a_chain_stores_each_turn_once_and_reads_back_in_one_walk(database: Database) -> None:
    table = ResponseTable(database)
    _save_chain(table, "acme", ["a", "b", "c"])
    assert _stored_items(database) == {f"resp_{n}": [_item(n)] for n in "abc"}  # no row copies another's
    chain = table.get_chain("acme", "resp_c", 10)
    assert [t.body["id"] for t in chain] == ["resp_a", "resp_b", "resp_c"] and chain[0].continues is None
    assert conversation_items(chain) == [_item(n) if i % 2 == 0 else _output(n)[0] for n in "abc" for i in (0, 1)]
    newest = table.get_chain("acme", "resp_c", 2)
    assert [t.body["id"] for t in newest] == ["resp_b", "resp_c"] and newest[0].continues == "resp_a"
    assert table.get_chain("other", "resp_c", 10) is None


def test_deleting_inside_a_chain_hides_the_response_and_keeps_the_chain(database: Database) -> None:
    table = ResponseTable(database)
    _save_chain(table, "acme", ["a", "b", "c"])
    assert table.delete("acme", "resp_b")
    assert table.get("acme", "resp_b") is None and table.get_chain("acme", "resp_b", 10) is None
    assert _ids(table.list("acme", 10)) == (["resp_c", "resp_a"], False)
    assert not table.delete("acme", "resp_b")
    assert len(table.get_chain("acme", "resp_c", 10)) == 3  # the continuation still reads b's turn
    assert table.delete("acme", "resp_c")  # nothing continues c, nor now the hidden b: both go
    assert set(_stored_items(database)) == {"resp_a"}


def test_retention_hides_old_responses_and_deletes_them_from_the_newest_end(database: Database) -> None:
    table = ResponseTable(database, ttl_s=3600)
    long_ago = int(time.time()) - 7200
    _save_chain(table, "acme", ["old1", "old2"], created_at=long_ago)  # all of it expired
    _save_chain(table, "acme", ["x1", "x2"], created_at=long_ago)
    table.save("acme", body("resp_x3", previous_response_id="resp_x2", output=_output("x3")), [_item("x3")])
    assert table.get("acme", "resp_old2") is None and table.get_chain("acme", "resp_old2", 10) is None
    assert _ids(table.list("acme", 10)) == (["resp_x3"], False)
    assert table.purge() == 2  # old2, then old1; x1 and x2 stay while x3 continues them
    assert set(_stored_items(database)) == {"resp_x1", "resp_x2", "resp_x3"}
    assert len(table.get_chain("acme", "resp_x3", 10)) == 3


def test_rows_from_before_chains_hold_their_history_and_end_the_walk(data_dir, database_url) -> None:
    from firebox.platform.db import resolve_database_url

    database = Database(resolve_database_url(data_dir, database_url))
    database.upgrade("0003")
    full_history = [_item("a"), *_output("a"), _item("b")]  # as rows were stored: every earlier turn copied
    with database.engine.begin() as connection:
        connection.execute(
            insert(ResponseRow.__table__).values(
                response_id="resp_b", account_id="acme", previous_response_id="resp_a", model="m", status="completed",
                created=datetime.now(), updated=datetime.now(), body=body("resp_b", previous_response_id="resp_a",
                output=_output("b")), input_items=full_history,
            )
        )  # fmt: skip
    database.upgrade()
    try:
        table = ResponseTable(database)
        table.save("acme", body("resp_c", previous_response_id="resp_b", output=_output("c")), [_item("c")])
        chain = table.get_chain("acme", "resp_c", 10)
        assert [t.body["id"] for t in chain] == ["resp_b", "resp_c"] and chain[0].continues is None
        assert conversation_items(chain, with_last_output=False) == [*full_history, *_output("b"), _item("c")]
    finally:
        database.close()


def test_the_store_purges_on_a_write_with_a_ttl(database: Database) -> None:
    store = SqlResponseStore(database, ttl_s=60)
    old = body("resp_old", created_at=int(time.time()) - 120)
    store.table.save("acme", old, ITEMS)

    async def write() -> None:
        await store.save("acme", body("resp_new"), ITEMS)

    try:
        asyncio.run(write())
    finally:
        store.close()  # the purge queued after the write is done
    assert set(_stored_items(database)) == {"resp_new"}


def test_revision_0004_downgrades_and_upgrades_again(database: Database) -> None:
    from alembic import command
    from alembic.config import Config

    from firebox.platform import migrations

    table = ResponseTable(database)
    _save_chain(table, "acme", ["a", "b"])
    table.delete("acme", "resp_a")  # hidden: b continues it
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    columns = {c["name"] for c in inspect(database.engine).get_columns("responses")}
    assert "holds_history" not in columns and "deleted" not in columns
    database.upgrade()
    assert set(_stored_items(database)) == {"resp_b"}  # the hidden one went with the downgrade


def test_the_in_memory_store_keeps_chains_as_the_sql_one_does() -> None:
    memory = InMemoryResponseStore()

    async def scenario() -> None:
        previous = None
        for name in "abc":
            reply = body(f"resp_{name}", previous_response_id=previous, output=_output(name))
            await memory.save("acme", reply, [_item(name)])
            previous = f"resp_{name}"
        chain = await memory.get_chain("acme", "resp_c", 10)
        assert conversation_items(chain) == [_item(n) if i % 2 == 0 else _output(n)[0] for n in "abc" for i in (0, 1)]
        assert [t.body["id"] for t in await memory.get_chain("acme", "resp_c", 2)] == ["resp_b", "resp_c"]
        assert await memory.delete("acme", "resp_b") and await memory.get("acme", "resp_b") is None
        assert len(await memory.get_chain("acme", "resp_c", 10)) == 3
        assert await memory.delete("acme", "resp_c")
        assert list(memory._entries) == ["resp_a"]  # b went with c, the last response that continued it

    asyncio.run(scenario())
