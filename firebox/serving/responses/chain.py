"""A continuation's earlier turns: the stored chain of `previous_response_id`s as items, bounded.

Each stored response holds only its own request's input items (and its output); the chain is
walked when it is read, so a conversation of N turns is stored once, not N times. A conversation
is capped in turns and in bytes, a 400 beyond either, so that the walk and the prompt it becomes
stay bounded.
"""

from __future__ import annotations

import json
from typing import Any

from firebox.serving.errors import InvalidRequestError
from firebox.serving.responses.store import ResponseStore, conversation_items

MAX_CONVERSATION_TURNS = 256  # responses in one chain of previous_response_ids
MAX_CONVERSATION_BYTES = 8 << 20  # its items (inputs and outputs) as JSON


async def earlier_items(
    store: ResponseStore, account_id: str, previous_response_id: str, new_items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The items of the conversation `previous_response_id` ends (every turn's input and output),
    for a request adding `new_items`; a 400 when it is missing, unfinished or over a cap."""
    chain = await store.get_chain(account_id, previous_response_id, MAX_CONVERSATION_TURNS)
    if chain is None:
        raise InvalidRequestError(
            f"Previous response with id {previous_response_id!r} not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if chain[-1].body["status"] == "in_progress":
        raise InvalidRequestError(
            f"Previous response {previous_response_id!r} is still in progress.", param="previous_response_id"
        )
    _check_turns(chain[0].continues, len(chain))
    earlier = conversation_items(chain)
    _check_bytes(len(json.dumps(earlier)) + len(json.dumps(new_items)))
    return earlier


async def stored_input_items(store: ResponseStore, account_id: str, response_id: str) -> list[dict[str, Any]] | None:
    """Every input item the response's model saw: the earlier turns' inputs and outputs, then its own."""
    chain = await store.get_chain(account_id, response_id, MAX_CONVERSATION_TURNS)
    return None if chain is None else conversation_items(chain, with_last_output=False)


def _check_turns(left_out: str | None, num_turns: int) -> None:
    if num_turns >= MAX_CONVERSATION_TURNS:
        raise InvalidRequestError(
            f"This conversation already has {num_turns} responses, the most a chain of previous_response_id may "
            "hold; start a new conversation (pass the items to keep as input).",
            param="previous_response_id",
            code="conversation_too_long",
        )
    if left_out is not None:
        raise InvalidRequestError(
            f"An earlier response of this conversation, {left_out!r}, is no longer stored.",
            param="previous_response_id",
            code="previous_response_not_found",
        )


def _check_bytes(num_bytes: int) -> None:
    if num_bytes > MAX_CONVERSATION_BYTES:
        raise InvalidRequestError(
            f"This conversation's items would take {num_bytes} bytes, over the limit of {MAX_CONVERSATION_BYTES}; "
            "start a new conversation (pass the items to keep as input).",
            param="previous_response_id",
            code="conversation_too_long",
        )
