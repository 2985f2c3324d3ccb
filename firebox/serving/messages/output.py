"""A chat run's one choice as Anthropic's answer: content blocks, stop reason and usage, whole or
as the stream's events.

The choice's parser (tool calls, and reasoning where the model has it) splits the text as for
chat; its parts become blocks in the order they come: `thinking`, `text`, `tool_use`. A streamed
block opens when the kind of output changes; a tool call arrives whole (the parser sends a call once
it is complete), so its block is a start with `input: {}`, one `input_json_delta` and a stop.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from firebox.protocol.messages import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJsonDelta,
    MessageDelta,
    MessageDeltaEvent,
    MessageResponse,
    MessagesEvent,
    MessageStartEvent,
    MessageStopEvent,
    MessagesUsage,
    OutputBlock,
    StopReason,
    TextContent,
    TextDelta,
    ThinkingContent,
    ThinkingDelta,
    ToolUseContent,
)
from firebox.serving.generation.output import ChoiceRenderer, deltas
from firebox.serving.output_parsing import ParsedDelta
from firebox.serving.generation.run import GenerationRun


def tool_use_id(call_id: str) -> str:
    """Anthropic's id form for the parser's `call_...` ids."""
    return "toolu_" + call_id.removeprefix("call_")


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the `input` object; the tool grammar makes them one, but a value of
    another kind is kept rather than dropped."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        value = arguments
    return value if isinstance(value, dict) else {"value": value}


def stop_reason(renderer: ChoiceRenderer) -> tuple[StopReason, str | None]:
    """(stop_reason, stop_sequence) of a finished choice."""
    reason = renderer.finish_reason
    if reason == "tool_calls":
        return "tool_use", None
    if reason == "length":
        return "max_tokens", None
    matched = renderer.choice.stop_reason
    if isinstance(matched, str):  # a stop string (an int is the end-of-turn token)
        return "stop_sequence", matched
    return "end_turn", None


def messages_usage(run: GenerationRun) -> MessagesUsage:
    usage = run.usage()
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return MessagesUsage(
        input_tokens=usage.prompt_tokens - (cached or 0),
        output_tokens=usage.completion_tokens or 0,
        cache_read_input_tokens=cached or 0,
    )


def message_body(run: GenerationRun, renderer: ChoiceRenderer) -> MessageResponse:
    blocks = _blocks(renderer.parsed(), renderer)  # parsing first: a call makes the stop reason tool_use
    return _frame(run, blocks, *stop_reason(renderer))


def _frame(
    run: GenerationRun, content: list[OutputBlock], reason: StopReason | None, sequence: str | None
) -> MessageResponse:
    return MessageResponse(
        id=f"msg_{run.info.ctx.request_id}",
        content=content,
        model=run.info.handle.name,
        stop_reason=reason,
        stop_sequence=sequence,
        usage=messages_usage(run),
    )


def _blocks(parsed: ParsedDelta, renderer: ChoiceRenderer) -> list[OutputBlock]:
    calls = renderer.tool_calls
    blocks: list[OutputBlock] = [ThinkingContent(thinking=parsed.reasoning)] if parsed.reasoning else []
    if parsed.content or not (blocks or calls):  # an empty answer is still one (empty) text block
        blocks.append(TextContent(text=parsed.content))
    blocks += [ToolUseContent(id=tool_use_id(c.id), name=c.name, input=tool_input(c.arguments)) for c in calls]
    return blocks


class BlockStream:
    """The content-block events of one streamed answer, from its parsed deltas."""

    def __init__(self) -> None:
        self._index = -1  # the latest block's
        self._open: str | None = None  # the type of the block still open

    def feed(self, parsed: ParsedDelta) -> list[MessagesEvent]:
        events: list[MessagesEvent] = []
        if parsed.reasoning:
            events += self._extend("thinking", ThinkingContent(thinking=""), ThinkingDelta(thinking=parsed.reasoning))
        if parsed.content:
            events += self._extend("text", TextContent(text=""), TextDelta(text=parsed.content))
        for call in parsed.tool_calls:
            events += self._close()
            self._index += 1
            partial = json.dumps(tool_input(call.arguments))
            start = ToolUseContent(id=tool_use_id(call.id), name=call.name, input={})
            events += [
                ContentBlockStartEvent(index=self._index, content_block=start),
                ContentBlockDeltaEvent(index=self._index, delta=InputJsonDelta(partial_json=partial)),
                ContentBlockStopEvent(index=self._index),
            ]
        return events

    def finish(self) -> list[MessagesEvent]:
        if self._index < 0:  # as the whole answer: at least one (empty) text block
            return [*self._extend("text", TextContent(text=""), None), *self._close()]
        return self._close()

    def _extend(self, kind: str, empty: OutputBlock, delta: TextDelta | ThinkingDelta | None) -> list[MessagesEvent]:
        events: list[MessagesEvent] = []
        if self._open != kind:
            events += self._close()
            self._index += 1
            self._open = kind
            events.append(ContentBlockStartEvent(index=self._index, content_block=empty))
        if delta is not None:
            events.append(ContentBlockDeltaEvent(index=self._index, delta=delta))
        return events

    def _close(self) -> list[MessagesEvent]:
        if self._open is None:
            return []
        self._open = None
        return [ContentBlockStopEvent(index=self._index)]


async def message_events(run: GenerationRun, renderer: ChoiceRenderer) -> AsyncIterator[MessagesEvent]:
    """message_start, the blocks' events, message_delta (stop reason, usage), message_stop."""
    yield MessageStartEvent(message=_frame(run, [], None, None))
    blocks = BlockStream()
    async for delta in deltas(run, [renderer]):
        for event in blocks.feed(renderer.parse_delta(delta.output)):
            yield event
    for event in blocks.finish():
        yield event
    reason, sequence = stop_reason(renderer)
    yield MessageDeltaEvent(delta=MessageDelta(stop_reason=reason, stop_sequence=sequence), usage=messages_usage(run))
    yield MessageStopEvent()
