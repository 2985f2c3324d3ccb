"""Function tools on the Responses API, through the chat machinery: the request's tools resolved
into a `ToolCalling`, the model family's `ToolFormat` (its prompt, grammar and parser), what the
response echoes, and `max_tool_calls`.

`max_tool_calls` is honoured as OpenAI documents it for its own tools: calls past the limit are
ignored (left out of the output); a limit of 1 is a single call, enforced by the grammar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firebox.engine.types import StructuredOutputSpec
from firebox.protocol.responses import ResponseCreateRequest
from firebox.serving.errors import InvalidRequestError
from firebox.serving.output_parsing import OutputParser, ToolCallParser
from firebox.serving.tools.calling import ToolCalling, tool_calling
from firebox.serving.tools.formats import ToolFormat, format_for_template
from firebox.serving.tools.prompting import prompt_messages


@dataclass(frozen=True, slots=True)
class ResponseTools:
    calling: ToolCalling | None  # None: the request offers no tools
    fmt: ToolFormat
    max_calls: int | None  # calls past this many are left out of the output

    @property
    def may_call(self) -> bool:
        return self.calling is not None and self.calling.may_call

    def grammar(self) -> StructuredOutputSpec | None:
        if self.calling is None or not self.calling.may_call:
            return None
        return self.fmt.grammar(self.calling)

    def new_parser(self) -> OutputParser | None:
        return ToolCallParser(self.fmt) if self.may_call else None

    def prompt(
        self, messages: list[dict[str, Any]], chat_template: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """(messages, tools) to render the chat template with, as chat renders them."""
        return prompt_messages(messages, self.calling, self.fmt, chat_template)


def resolve_response_tools(req: ResponseCreateRequest, chat_template: str | None) -> ResponseTools:
    parallel = req.parallel_tool_calls is not False and req.max_tool_calls != 1
    calling = tool_calling(req.tools or [], "tools", req.tool_choice, parallel)
    tools = ResponseTools(calling, format_for_template(chat_template), req.max_tool_calls)
    if tools.may_call:
        _check_combinations(req)
    return tools


def _check_combinations(req: ResponseCreateRequest) -> None:
    """What cannot go with calls: the calls are constrained output, and their markup is not text."""
    if req.wants_logprobs:
        raise InvalidRequestError(
            'include "message.output_text.logprobs" cannot be combined with tools that may be called; '
            'pass tool_choice "none" or leave the logprobs out',
            param="include",
        )
    if req.text is not None and req.text.format is not None and req.text.format.type != "text":
        raise InvalidRequestError(
            'text.format cannot be combined with tools that may be called; pass tool_choice "none" or leave it out',
            param="text.format",
        )


def echoed_tools(req: ResponseCreateRequest) -> list[dict[str, Any]]:
    """The tools as OpenAI echoes them; `strict` is true unless turned off (the schema is always enforced)."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
            "strict": tool.strict is not False,
        }
        for tool in req.tools or ()
    ]


def echoed_tool_choice(req: ResponseCreateRequest) -> str | dict[str, Any]:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    name = choice.function.name if choice.function is not None else choice.name
    return {"type": "function", "name": name}
