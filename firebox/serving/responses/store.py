"""The `ResponseStore` interface (stored Responses-API objects), paging, and an in-memory store.

A stored response is its JSON body (the `response` object as last sent) plus the input items its
own request added. The earlier turns are not copied into it: `previous_response_id` links them,
and a continuation walks the chain (`get_chain`), so a conversation of N turns is stored once, not
N times. Responses belong to an account; every call names it, and another account's response does
not exist. A deleted response that a later one continues is hidden but kept for that chain. The
platform's SQL store implements the same methods (and retention); the in-memory one serves an app
built without a platform (tests, embedding).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Order = Literal["asc", "desc"]


class StoredTurn(Protocol):
    """One response of a conversation: its body and the input items its request added."""

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def input_items(self) -> list[dict[str, Any]]: ...

    @property
    def continues(self) -> str | None:
        """The response whose turns come before these items; None: they start the conversation."""
        ...


@dataclass(frozen=True, slots=True)
class _Turn:
    body: dict[str, Any]
    input_items: list[dict[str, Any]]
    continues: str | None


def conversation_items(chain: Sequence[StoredTurn], with_last_output: bool = True) -> list[dict[str, Any]]:
    """The items of a chain (oldest turn first): each turn's input items, then its output."""
    items: list[dict[str, Any]] = []
    for i, turn in enumerate(chain):
        items += turn.input_items
        if with_last_output or i < len(chain) - 1:
            items += turn.body["output"]
    return items


class ResponseStore(Protocol):
    """Stored responses by account. Writes are queued when `save` is called, in call order, so a
    stream being cancelled can record its end without awaiting; awaiting `save` waits until the
    write is done. Reads see every write queued before them."""

    def save(self, account_id: str, body: dict[str, Any], input_items: list[dict[str, Any]]) -> Awaitable[None]:
        """Insert the response `body["id"]` with the input items of its own request (the earlier
        turns are `body["previous_response_id"]`'s), or replace its body (the items do not change)."""
        ...

    async def get(self, account_id: str, response_id: str) -> dict[str, Any] | None:
        """The response body, or None when the account has no such response."""
        ...

    async def get_chain(self, account_id: str, response_id: str, max_turns: int) -> list[StoredTurn] | None:
        """The response and those it continues, oldest first, at most `max_turns` of them (the
        newest); the first one's `continues` is not None when turns before it were left out (or
        are gone). None when the account has no such response."""
        ...

    async def delete(self, account_id: str, response_id: str) -> bool:
        """False when there was nothing to delete. A response that another continues is hidden
        and its items kept for that chain; they go when no stored response continues it."""
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
    is_deleted: bool = False  # hidden, kept while a later response continues it


def completed_future() -> asyncio.Future[None]:
    """What `save` returns when there was nothing to wait for."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class InMemoryResponseStore:
    """Responses in a dict, for as long as the process runs."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}  # insertion order is creation order

    def _entry(self, account_id: str, response_id: str, hidden_too: bool = False) -> _Entry | None:
        entry = self._entries.get(response_id)
        if entry is None or entry.account_id != account_id or (entry.is_deleted and not hidden_too):
            return None
        return entry

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

    async def get_chain(self, account_id: str, response_id: str, max_turns: int) -> list[StoredTurn] | None:
        entry = self._entry(account_id, response_id)
        if entry is None:
            return None
        chain = [entry]
        while len(chain) < max_turns and (previous := chain[-1].body.get("previous_response_id")) is not None:
            if (earlier := self._entry(account_id, previous, hidden_too=True)) is None:
                break
            chain.append(earlier)
        return [_Turn(e.body, e.input_items, e.body.get("previous_response_id")) for e in reversed(chain)]

    async def delete(self, account_id: str, response_id: str) -> bool:
        entry = self._entry(account_id, response_id)
        if entry is None:
            return False
        entry.is_deleted = True
        while entry is not None and entry.is_deleted and not self._is_continued(entry.body["id"]):
            del self._entries[entry.body["id"]]  # and then the hidden ones only it continued
            previous = entry.body.get("previous_response_id")
            entry = None if previous is None else self._entry(account_id, previous, hidden_too=True)
        return True

    def _is_continued(self, response_id: str) -> bool:
        return any(e.body.get("previous_response_id") == response_id for e in self._entries.values())

    async def list(
        self, account_id: str, limit: int, after: str | None = None, before: str | None = None, order: Order = "desc"
    ) -> tuple[list[dict[str, Any]], bool]:
        bodies = [e.body for e in self._entries.values() if e.account_id == account_id and not e.is_deleted]
        if order == "desc":
            bodies.reverse()
        return page_of(bodies, lambda body: body["id"], limit, after, before)
