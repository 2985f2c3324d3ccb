"""Models that think out loud (Qwen3, QwQ, DeepSeek-R1 templates): whether a model does, how a
request turns its thinking on or off, where an output's thinking ends, and what it cost.

A chat template that writes `<think>` marks a thinking model; one that reads `enable_thinking` can
also turn the thinking off (Qwen3's prompt then closes an empty thinking block). A request says
what it wants with `reasoning_effort` (OpenAI) or `thinking` (Fireworks, Anthropic-style):
- "none" / false / `{"type": "disabled"}`: thinking off (`enable_thinking=False`); a 400 where the
  template cannot turn it off;
- "minimal" / "low" / "medium" / "high" / true / `{"type": "enabled"}`: thinking on. firebox has
  no per-effort budget: every effort thinks as long as the model does;
- a token budget (an integer effort, `budget_tokens`) is a 400: llguidance cannot cut the thinking
  short and still force its close tag, and a budget not kept would be a parameter ignored.
On a model that does not think, anything but off is a 400, as before thinking was supported.
What the output starts with follows from the rendered prompt's end (`ThinkingMode`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import StructuredOutputSpec
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.params import GenerationParams
from firebox.serving.errors import InvalidRequestError
from firebox.serving.output_parsing import ContentParser, OutputParser, ReasoningParser, ReasoningState, ToolCallParser
from firebox.serving.structured_output import after_thinking
from firebox.serving.tools.formats import ToolFormat

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SWITCH = "enable_thinking"  # the template variable that turns thinking off (Qwen3)


class ThinkingMode(enum.Enum):
    OPENED = "opened"  # the prompt ends inside the thinking: the output starts in it (QwQ, R1)
    OPTIONAL = "optional"  # the output may open it (Qwen3, thinking on)
    OFF = "off"  # the prompt closed it (Qwen3 with enable_thinking=False)

    @classmethod
    def of_prompt(cls, prompt_text: str) -> ThinkingMode:
        tail = prompt_text.rstrip()
        if tail.endswith(THINK_CLOSE):
            return cls.OFF
        return cls.OPENED if tail.endswith(THINK_OPEN) else cls.OPTIONAL


@dataclass(frozen=True, slots=True)
class Thinking:
    """A request's thinking on a thinking model."""

    enabled: bool | None  # None: the template's default

    def template_variables(self) -> dict[str, Any]:
        return {} if self.enabled is None else {SWITCH: self.enabled}


def resolve_thinking(req: GenerationParams, chat_template: str | None) -> Thinking | None:
    """The request's thinking, or None on a model that does not think (after refusing a request
    that asks it to). `chat_template` None: a raw prompt, which no template makes think."""
    enabled, has_budget, param = _asked(req)
    template = chat_template or ""
    if THINK_OPEN not in template:
        if enabled:
            raise InvalidRequestError(
                f"'{param}' is not supported by this model: its chat template does not think out loud; "
                'only "none", false or disabled pass',
                param=param,
            )
        return None
    if has_budget:
        raise InvalidRequestError(
            f"'{param}' with a token budget is not supported: firebox cannot cap the thinking alone; "
            "turn thinking on or off, and bound the whole output with max_tokens",
            param=param,
        )
    if enabled is False and SWITCH not in template:
        raise InvalidRequestError(f"this model's chat template cannot turn thinking off ({param})", param=param)
    return Thinking(enabled)


def _asked(req: GenerationParams) -> tuple[bool | None, bool, str]:
    """(thinking on, off or the template's default; whether a token budget came with it; the field)."""
    effort, thinking = req.reasoning_effort, req.thinking
    if thinking is not None:
        if effort is not None:
            raise InvalidRequestError("give reasoning_effort or thinking, not both", param="thinking")
        enabled = thinking.type == "enabled"
        return enabled, enabled and thinking.budget_tokens is not None, "thinking"
    if effort is None or isinstance(effort, bool):
        return effort, False, "reasoning_effort"
    if isinstance(effort, int):  # a budget; 0 thinks not at all
        return effort > 0, effort > 0, "reasoning_effort"
    return effort != "none", False, "reasoning_effort"


def new_output_parser(fmt: ToolFormat | None, mode: ThinkingMode | None) -> OutputParser | None:
    """One choice's parser: tool calls in `fmt` (None: no calls), after the thinking on a thinking model."""
    calls = ToolCallParser(fmt) if fmt is not None else None
    if mode is None:
        return calls
    return ReasoningParser(calls or ContentParser(), mode is ThinkingMode.OPENED, THINK_OPEN, THINK_CLOSE)


def count_reasoning_tokens(tokenizer: Tokenizer, token_ids: Sequence[int], state: ReasoningState) -> int:
    """The output tokens spent thinking: all of them while it thinks, else those through the close
    tag (the shortest prefix that decodes to text holding it; one token on Qwen3 and R1)."""
    if state is ReasoningState.NONE:
        return 0
    if state is ReasoningState.THINKING:
        return len(token_ids)
    low, high = 1, len(token_ids)
    while low < high:
        middle = (low + high) // 2
        if THINK_CLOSE in tokenizer.decode(token_ids[:middle], skip_special_tokens=False):
            high = middle
        else:
            low = middle + 1
    return high


def answer_grammar(spec: StructuredOutputSpec | None, mode: ThinkingMode | None) -> StructuredOutputSpec | None:
    """`spec` (response_format or the tools' calls) constraining the answer after the thinking only."""
    if spec is None or mode is None or mode is ThinkingMode.OFF:
        return spec
    return after_thinking(spec, mode is ThinkingMode.OPENED, THINK_OPEN, THINK_CLOSE)
