"""Stored responses of the Responses API in the platform database (table `responses`).

`ResponseTable` is the synchronous SQL; `SqlResponseStore` is what serving uses (the methods of
`firebox.serving.response_store_interface.ResponseStore`): every call runs on one worker thread, off the
event loop, in call order, so a write queued by a stream that is being cancelled still lands,
after the ones before it, and a read sees every write queued before it.

Each row holds its own turn's input items; a chain of `previous_response_id`s is read back with
one recursive query. Rows written before revision 0004 hold the whole conversation
(`holds_history`), and a walk stops at them. Retention (`ttl_s`): a response is hidden once it is
older than that, and deleted (as are hidden, deleted ones) once no stored response continues it,
so a conversation's turns go from its newest end and a chain never loses its middle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, literal, not_, or_, select
from sqlalchemy.orm import Session, aliased

from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError, InvalidArgumentError
from firebox.platform.schema import ResponseRow
from firebox.platform.times import utcnow

logger = logging.getLogger(__name__)
Order = Literal["asc", "desc"]
PURGE_INTERVAL_S = 600.0  # how often, at most, expired responses are deleted (on a write)


@dataclass(frozen=True, slots=True)
class StoredResponseTurn:
    """One response of a chain (serving's `StoredTurn`): its body and its own request's items."""

    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    continues: str | None  # the response whose turns come before these items; None: they start it


def _created(body: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(body["created_at"], UTC).replace(tzinfo=None)


class ResponseTable:
    """Responses by account. Blocking: call off the event loop. `ttl_s`: retention (None: forever)."""

    def __init__(self, database: Database, ttl_s: float | None = None) -> None:
        self._db = database
        self._ttl = None if ttl_s is None else timedelta(seconds=ttl_s)

    def _shown(self, account_id: str) -> list[ColumnElement[bool]]:
        """The account's responses that are neither deleted nor expired."""
        shown = [ResponseRow.account_id == account_id, not_(ResponseRow.deleted)]
        return shown if self._ttl is None else [*shown, ResponseRow.created >= utcnow() - self._ttl]

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
        """Insert `body["id"]`, or replace its body and status (its input items never change)."""
        with self._db.session() as session:
            row = session.scalar(select(ResponseRow).where(ResponseRow.response_id == body["id"]))
            if row is None:
                session.add(ResponseRow(
                    response_id=body["id"], account_id=account_id,
                    previous_response_id=body.get("previous_response_id"), model=body["model"],
                    status=body["status"], created=_created(body), updated=utcnow(), body=body,
                    input_items=input_items, holds_history=False, deleted=False,
                ))  # fmt: skip
            elif row.account_id != account_id:
                raise AlreadyExistsError(f"response {body['id']!r} belongs to another account")
            else:
                row.body, row.status, row.updated = body, body["status"], utcnow()

    def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        with self._db.session() as session:
            return session.scalar(
                select(ResponseRow.body).where(ResponseRow.response_id == response_id, *self._shown(account_id))
            )

    def get_chain(self, account_id: str, response_id: str, max_turns: int) -> list[StoredResponseTurn] | None:
        """The response and those it continues, oldest first (at most `max_turns`), in one query."""
        head = select(ResponseRow.seq, ResponseRow.previous_response_id, ResponseRow.holds_history, literal(1))
        chain = head.where(ResponseRow.response_id == response_id, *self._shown(account_id))
        chain = chain.cte("chain", recursive=True)
        seq, previous_id, holds_history, depth = chain.c
        earlier = aliased(ResponseRow)
        chain = chain.union_all(
            select(earlier.seq, earlier.previous_response_id, earlier.holds_history, depth + 1).where(
                earlier.response_id == previous_id, earlier.account_id == account_id, not_(holds_history),
                depth < max_turns,
            )
        )  # fmt: skip
        query = select(ResponseRow).join(chain, ResponseRow.seq == chain.c[0]).order_by(chain.c[3].desc())
        with self._db.session() as session:
            rows = session.scalars(query).all()
            turns = [
                StoredResponseTurn(r.body, r.input_items, None if r.holds_history else r.previous_response_id)
                for r in rows
            ]
        return turns or None

    def delete(self, account_id: str, response_id: str) -> bool:
        """Hide the response; delete it (and the hidden ones before it) unless another continues it."""
        with self._db.session() as session:
            query = select(ResponseRow).where(ResponseRow.response_id == response_id, *self._shown(account_id))
            row = session.scalar(query)
            if row is None:
                return False
            row.deleted = True
            while row is not None and row.deleted and not _is_continued(session, row.response_id):
                previous = row.previous_response_id
                session.delete(row)
                session.flush()
                row = None if previous is None else session.scalar(
                    select(ResponseRow).where(ResponseRow.response_id == previous)
                )  # fmt: skip
        return True

    def purge(self) -> int:
        """Delete the expired and the deleted responses that no stored response continues (a chain
        from its newest end, a round per turn); how many went."""
        gone = ResponseRow.deleted
        if self._ttl is not None:
            gone = or_(gone, ResponseRow.created < utcnow() - self._ttl)
        continued = select(ResponseRow.previous_response_id).where(ResponseRow.previous_response_id.is_not(None))
        statement = delete(ResponseRow).where(gone, ResponseRow.response_id.not_in(continued))
        total = 0
        while True:
            with self._db.session() as session:
                num_deleted = session.execute(statement.execution_options(synchronize_session=False)).rowcount
            total += num_deleted
            if num_deleted == 0:
                return total

    def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        """(bodies, has more) by creation; `after` / `before` are response ids of the listing."""
        newest_first = order == "desc"
        query = select(ResponseRow.body).where(*self._shown(account_id))
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

    def _seq(self, session: Any, account_id: str, response_id: str) -> int:
        seq = session.scalar(
            select(ResponseRow.seq).where(ResponseRow.response_id == response_id, *self._shown(account_id))
        )
        if seq is None:
            raise InvalidArgumentError(f"no response with id {response_id!r} in this list")
        return seq


class SqlResponseStore:
    """`ResponseTable` on its own worker thread, for the event loop. `close()` finishes the queue.
    With `ttl_s`, a write starts a purge of expired responses when the last is PURGE_INTERVAL_S old."""

    def __init__(self, database: Database, ttl_s: float | None = None) -> None:
        self.table = ResponseTable(database, ttl_s)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firebox-responses")
        self._next_purge_at = time.monotonic() if ttl_s is not None else float("inf")

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
        saved = self._submit(self.table.save, account_id, body, input_items)
        if time.monotonic() >= self._next_purge_at:
            self._next_purge_at = time.monotonic() + PURGE_INTERVAL_S
            self._worker.submit(self.table.purge).add_done_callback(_log_failure)
        return saved

    async def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        return await self._submit(self.table.get, account_id, response_id)

    async def get_chain(self, account_id: str, response_id: str, max_turns: int) -> list[StoredResponseTurn] | None:
        return await self._submit(self.table.get_chain, account_id, response_id, max_turns)

    async def delete(self, account_id: str, response_id: str) -> bool:
        return await self._submit(self.table.delete, account_id, response_id)

    async def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        return await self._submit(self.table.list, account_id, limit, after, before, order)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def _is_continued(session: Session, response_id: str) -> bool:
    continuation = select(ResponseRow.seq).where(ResponseRow.previous_response_id == response_id).limit(1)
    return session.scalar(continuation) is not None


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
