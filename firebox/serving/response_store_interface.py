"""The `ResponseStore` interface (stored Responses-API objects), paging, and an in-memory store.

A stored response is its JSON body (the `response` object as last sent) plus every input item the
model saw: the earlier turns' inputs and outputs and this turn's input, so that a continuation
(`previous_response_id`) reads one response only. Responses belong to an account; every call
names it, and another account's response does not exist. The platform's SQL store implements the
same methods; the in-memory one serves an app built without a platform (tests, embedding).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Order = Literal["asc", "desc"]


class ResponseStore(Protocol):
    """Stored responses by account. Writes are queued when `save` is called, in call order, so a
    stream being cancelled can record its end without awaiting; awaiting `save` waits until the
    write is done. Reads see every write queued before them."""

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> Awaitable[None]:
        """Insert the response `body["id"]`, or replace its body (the input items do not change)."""
        ...

    async def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        """The response body, or None when the account has no such response."""
        ...

    async def get_input_items(self, account_id: str, response_id: str) -> list[dict[str, Any]] | None: ...

    async def delete(self, account_id: str, response_id: str) -> bool:
        """False when there was nothing to delete."""
        ...

    async def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        """(response bodies, has more) in creation order (`desc`: newest first); `after` / `before`
        are response ids of the listing (exclusive); ValueError for one the account does not have."""
        ...


def page_of(
    items: Sequence[T], id_of: Callable[[T], str], limit: int, after: str | None, before: str | None
) -> tuple[list[T], bool]:
    """The page of `items` (already in listing order) after / before the cursor ids."""
    ids = [id_of(item) for item in items]
    start, end = 0, len(items)
    for cursor, is_after in ((after, True), (before, False)):
        if cursor is None:
            continue
        if cursor not in ids:
            raise ValueError(f"no item with id {cursor!r} in this list")
        if is_after:
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    window = list(items[start:end])
    if before is not None and after is None:  # the page just before the cursor
        return window[-limit:], len(window) > limit
    return window[:limit], len(window) > limit


@dataclass(slots=True)
class _Entry:
    account_id: str
    body: dict[str, Any]
    input_items: list[dict[str, Any]]


def completed_future() -> asyncio.Future[None]:
    """What `save` returns when there was nothing to wait for."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class InMemoryResponseStore:
    """Responses in a dict, for as long as the process runs."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}  # insertion order is creation order

    def _entry(self, account_id: str, response_id: str) -> _Entry | None:
        entry = self._entries.get(response_id)
        return entry if entry is not None and entry.account_id == account_id else None

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> Awaitable[None]:
        entry = self._entries.get(body["id"])
        if entry is None:
            self._entries[body["id"]] = _Entry(account_id, body, input_items)
        elif entry.account_id == account_id:
            entry.body = body
        return completed_future()

    async def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        entry = self._entry(account_id, response_id)
        return None if entry is None else entry.body

    async def get_input_items(self, account_id: str, response_id: str) -> list[dict[str, Any]] | None:
        entry = self._entry(account_id, response_id)
        return None if entry is None else entry.input_items

    async def delete(self, account_id: str, response_id: str) -> bool:
        if self._entry(account_id, response_id) is None:
            return False
        del self._entries[response_id]
        return True

    async def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        bodies = [e.body for e in self._entries.values() if e.account_id == account_id]
        if order == "desc":
            bodies.reverse()
        return page_of(bodies, lambda body: body["id"], limit, after, before)
