"""Stored responses of the Responses API in the platform database (table `responses`).

`ResponseTable` is the synchronous SQL; `SqlResponseStore` is what serving uses (the methods of
`firebox.serving.response_store_interface.ResponseStore`): every call runs on one worker thread, off the
event loop, in call order, so a write queued by a stream that is being cancelled still lands,
after the ones before it, and a read sees every write queued before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, select

from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError, InvalidArgumentError
from firebox.platform.schema import ResponseRow
from firebox.platform.times import utcnow

logger = logging.getLogger(__name__)
Order = Literal["asc", "desc"]


def _created(body: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(body["created_at"], UTC).replace(tzinfo=None)


class ResponseTable:
    """Responses by account. Blocking: call off the event loop."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Insert `body["id"]`, or replace its body and status (its input items never change)."""
        with self._db.session() as session:
            row = session.scalar(select(ResponseRow).where(ResponseRow.response_id == body["id"]))
            if row is None:
                session.add(ResponseRow(
                    response_id=body["id"], account_id=account_id,
                    previous_response_id=body.get("previous_response_id"), model=body["model"],
                    status=body["status"], created=_created(body), updated=utcnow(), body=body,
                    input_items=input_items,
                ))  # fmt: skip
            elif row.account_id != account_id:
                raise AlreadyExistsError(f"response {body['id']!r} belongs to another account")
            else:
                row.body, row.status, row.updated = body, body["status"], utcnow()

    def _row(self, account_id: str, response_id: str) -> ResponseRow | None:
        with self._db.session() as session:
            query = select(ResponseRow).where(
                ResponseRow.response_id == response_id, ResponseRow.account_id == account_id
            )
            return session.scalar(query)

    def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        row = self._row(account_id, response_id)
        return None if row is None else row.body

    def get_input_items(self, account_id: str, response_id: str) -> list[dict[str, Any]] | None:
        row = self._row(account_id, response_id)
        return None if row is None else row.input_items

    def delete(self, account_id: str, response_id: str) -> bool:
        with self._db.session() as session:
            statement = delete(ResponseRow).where(
                ResponseRow.response_id == response_id, ResponseRow.account_id == account_id
            )
            return session.execute(statement).rowcount > 0

    def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        """(bodies, has more) by creation; `after` / `before` are response ids of the listing."""
        newest_first = order == "desc"
        query = select(ResponseRow.body).where(ResponseRow.account_id == account_id)
        with self._db.session() as session:
            for cursor, is_after in ((after, True), (before, False)):
                if cursor is not None:
                    seq = self._seq(session, account_id, cursor)
                    below = is_after == newest_first  # after, newest first: the older (lower) ones
                    query = query.where(ResponseRow.seq < seq if below else ResponseRow.seq > seq)
            # the page just before a `before` cursor is read backwards from the cursor, then turned
            backwards = before is not None and after is None
            ascending = newest_first == backwards
            query = query.order_by(ResponseRow.seq.asc() if ascending else ResponseRow.seq.desc())
            bodies = list(session.scalars(query.limit(limit + 1)))
        has_more, bodies = len(bodies) > limit, bodies[:limit]
        return (bodies[::-1] if backwards else bodies), has_more

    @staticmethod
    def _seq(session: Any, account_id: str, response_id: str) -> int:
        seq = session.scalar(
            select(ResponseRow.seq).where(ResponseRow.response_id == response_id, ResponseRow.account_id == account_id)
        )
        if seq is None:
            raise InvalidArgumentError(f"no response with id {response_id!r} in this list")
        return seq


class SqlResponseStore:
    """`ResponseTable` on its own worker thread, for the event loop. `close()` finishes the queue."""

    def __init__(self, database: Database) -> None:
        self.table = ResponseTable(database)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firebox-responses")

    def _submit(self, call: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue `call` now. Cancelling the returned future does not cancel the call: a write
        queued by a request that is being cancelled must still land."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()

        def settle_soon(job: Future[Any]) -> None:
            try:
                loop.call_soon_threadsafe(_settle, result, job)
            except RuntimeError:  # the event loop is gone (shutdown): nobody waits any more
                _log_failure(job)

        self._worker.submit(call, *args).add_done_callback(settle_soon)
        return result

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> asyncio.Future[None]:
        return self._submit(self.table.save, account_id, body, input_items)

    async def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        return await self._submit(self.table.get, account_id, response_id)

    async def get_input_items(self, account_id: str, response_id: str) -> list[dict[str, Any]] | None:
        return await self._submit(self.table.get_input_items, account_id, response_id)

    async def delete(self, account_id: str, response_id: str) -> bool:
        return await self._submit(self.table.delete, account_id, response_id)

    async def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        return await self._submit(self.table.list, account_id, limit, after, before, order)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def _log_failure(job: Future[Any]) -> BaseException | None:
    error = job.exception()
    if error is not None:
        logger.error("a stored-responses call failed: %r", error)
    return error


def _settle(result: asyncio.Future[Any], job: Future[Any]) -> None:
    error = _log_failure(job)
    if result.done():  # the waiter was cancelled
        return
    if error is None:
        result.set_result(job.result())
    else:
        result.set_exception(error)
        result.exception()  # logged above: a write nobody awaits must not warn again
