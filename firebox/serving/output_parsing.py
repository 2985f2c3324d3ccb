"""The output-parsing stage: between the engine's text deltas and the API's choice deltas.

A parser splits what the model writes into content, tool calls (and, where a model thinks out
loud, reasoning), delta by delta: text that may be the start of a tag is held back until it is
known not to be one, so call markup never reaches `content`. The same parser reads a whole output
for a non-streamed answer, so both agree.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from firebox.serving.tools.calling import ToolCall, new_call_id
from firebox.serving.tools.formats import ToolFormat


@dataclass(slots=True)
class ToolCallDelta:
    index: int  # the call's position among the choice's calls
    id: str
    name: str
    arguments: str  # the whole arguments JSON: a call is sent once it is complete

    def as_openai(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class ParsedDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def add(self, other: ParsedDelta) -> ParsedDelta:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls.extend(other.tool_calls)
        return self


class ReasoningState(enum.Enum):
    NONE = "none"  # no thinking (yet)
    THINKING = "thinking"  # inside it
    DONE = "done"  # closed: the answer follows


class OutputParser(Protocol):
    """One choice's parser, fed its text in order."""

    calls: list[ToolCall]  # the complete calls so far
    reasoning_state: ReasoningState

    def feed(self, text: str) -> ParsedDelta:
        """What `text` (appended to what came before) adds; held-back text comes later."""
        ...

    def finish(self) -> ParsedDelta:
        """Whatever was held back, once the output has ended."""
        ...


def held_back_length(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is the start of `tag`: it may still become it."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


class ToolCallParser:
    """Content and tool calls of one choice, in a model family's `ToolFormat`."""

    reasoning_state = ReasoningState.NONE

    def __init__(self, fmt: ToolFormat) -> None:
        self._fmt = fmt
        self._buffer = ""
        self._in_call = False
        self._blank_after_call = ""  # whitespace after a call: content only if text follows it
        self._is_text = False  # (formats whose calls open the output) this output is text
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> ParsedDelta:
        self._buffer += text
        out = ParsedDelta()
        while self._step(out):
            pass
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        if self._in_call and self._fmt.close_tag is None:
            self._take_block(self._buffer, out)
        elif self._in_call and self._fmt.close_tag in self._buffer:  # closed, yet never a call: text
            end = self._buffer.rfind(self._fmt.close_tag)
            self._take_block(self._buffer[:end], out)
            self._emit_text(self._buffer[end + len(self._fmt.close_tag) :], out, final=True)
        elif not self._in_call:
            self._emit_text(self._buffer, out, final=True)
        # else: a call cut off by max_tokens; finish_reason "length" says so, raw_output keeps it
        self._buffer = ""
        return out

    def _step(self, out: ParsedDelta) -> bool:
        """Consume what can be decided now; True if more may follow in the buffer."""
        fmt = self._fmt
        if not self._in_call and fmt.opens_output:
            return self._step_opening(out)
        if not self._in_call:
            start = self._buffer.find(fmt.open_tag)
            if start < 0:
                keep = held_back_length(self._buffer, fmt.open_tag)
                self._emit_text(self._buffer[: len(self._buffer) - keep], out)
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return False
            self._emit_text(self._buffer[:start], out)
            self._buffer = self._buffer[start + len(fmt.open_tag) :]
            self._in_call = True
            return True
        if fmt.close_tag is None or (end := self._parsable_end(fmt.close_tag)) is None:
            return False
        self._take_block(self._buffer[:end], out)
        self._buffer = self._buffer[end + len(fmt.close_tag) :]
        self._in_call = False
        return True

    def _parsable_end(self, close_tag: str) -> int | None:
        """Where the block ends: the first close tag after which it parses. The first close tag
        is not always the end: a call's string argument may hold the tag's text (the grammar
        allows any string), and the block goes on after it."""
        start = 0
        while (end := self._buffer.find(close_tag, start)) >= 0:
            try:
                self._fmt.parse_block(self._buffer[:end].strip())
            except (ValueError, TypeError):
                start = end + 1
            else:
                return end
        return None

    def _step_opening(self, out: ParsedDelta) -> bool:
        """Calls with no tag are the whole output: its first characters decide, held back till then."""
        fmt = self._fmt
        if self._is_text:
            self._emit_text(self._buffer, out)
            self._buffer = ""
            return False
        head = self._buffer.lstrip()
        if fmt.lead_in and head.startswith(fmt.lead_in):
            head = head[len(fmt.lead_in) :].lstrip()
        if head.startswith(fmt.open_tag):
            self._buffer = head[len(fmt.open_tag) :]
            self._in_call = True
            return True
        if fmt.open_tag.startswith(head) or fmt.lead_in.startswith(self._buffer.lstrip()):
            return False  # may still open a call
        self._is_text = True
        return True

    def _emit_text(self, text: str, out: ParsedDelta, final: bool = False) -> None:
        if not self.calls:
            out.content += text
            return
        pending = self._blank_after_call + text
        if pending.strip():
            out.content += pending
            self._blank_after_call = ""
        elif not final:
            self._blank_after_call = pending

    def _take_block(self, body: str, out: ParsedDelta) -> None:
        try:
            parsed = self._fmt.parse_block(body.strip())
        except (ValueError, TypeError):  # not a call after all: it is text
            self._emit_text(self._fmt.open_tag + body + (self._fmt.close_tag or ""), out)
            return
        for call in parsed:
            arguments = call["arguments"]
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            tool_call = ToolCall(new_call_id(), call["name"], text)
            out.tool_calls.append(ToolCallDelta(len(self.calls), tool_call.id, tool_call.name, tool_call.arguments))
            self.calls.append(tool_call)


class ContentParser:
    """All text is content: the answer of a thinking model that has no tools to call."""

    reasoning_state = ReasoningState.NONE

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> ParsedDelta:
        return ParsedDelta(content=text)

    def finish(self) -> ParsedDelta:
        return ParsedDelta()


class ReasoningParser:
    """A thinking model's output: the thinking (between the tags) to `reasoning`, the answer after
    it to `inner` (content and tool calls). The thinking is either opened by the prompt or by the
    output's first characters; whitespace around the thinking and before the answer is dropped."""

    def __init__(self, inner: OutputParser, opened: bool, open_tag: str, close_tag: str) -> None:
        self._inner = inner
        self._open_tag, self._close_tag = open_tag, close_tag
        self._buffer = ""
        self._state = "thinking" if opened else "start"  # start | thinking | after | answer | plain (no thinking)
        self._thought = False  # some thinking was sent (leading whitespace is dropped before it)

    @property
    def calls(self) -> list[ToolCall]:
        return self._inner.calls

    @property
    def reasoning_state(self) -> ReasoningState:
        states = {"thinking": ReasoningState.THINKING, "after": ReasoningState.DONE, "answer": ReasoningState.DONE}
        return states.get(self._state, ReasoningState.NONE)

    def feed(self, text: str) -> ParsedDelta:
        self._buffer += text
        out = ParsedDelta()
        while self._step(out, final=False):
            pass
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        while self._step(out, final=True):
            pass
        if self._state == "thinking":  # cut off while thinking (max_tokens)
            out.reasoning += self._buffer.rstrip()
        self._buffer = ""
        return out.add(self._inner.finish())

    def _step(self, out: ParsedDelta, final: bool) -> bool:
        """Consume what can be decided now; True if the state changed and more may follow."""
        if self._state == "start":
            head = self._buffer.lstrip()
            if head.startswith(self._open_tag):
                self._buffer, self._state = head[len(self._open_tag) :], "thinking"
            elif self._open_tag.startswith(head) and not final:
                return False  # may still open the thinking
            else:
                self._state = "plain"  # no thinking: all of it is the answer, as written
            return True
        if self._state == "thinking":
            return self._step_thinking(out)
        if self._state == "after":
            if not self._buffer.strip():
                return False
            self._buffer, self._state = self._buffer.lstrip(), "answer"
        out.add(self._inner.feed(self._buffer))
        self._buffer = ""
        return False

    def _step_thinking(self, out: ParsedDelta) -> bool:
        if not self._thought:
            self._buffer = self._buffer.lstrip()
        end = self._buffer.find(self._close_tag)
        if end >= 0:
            self._send_thinking(self._buffer[:end].rstrip(), out)
            self._buffer, self._state = self._buffer[end + len(self._close_tag) :], "after"
            return True
        sendable = self._buffer[: len(self._buffer) - held_back_length(self._buffer, self._close_tag)]
        text = sendable.rstrip()  # trailing whitespace waits: it is dropped if the close tag follows
        self._send_thinking(text, out)
        self._buffer = self._buffer[len(text) :]
        return False

    def _send_thinking(self, text: str, out: ParsedDelta) -> None:
        out.reasoning += text
        self._thought = self._thought or bool(text)
