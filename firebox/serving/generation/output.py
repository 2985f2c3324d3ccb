"""The parts of a choice that chat and completions share: echo, logprobs, raw output, token ids.

A `ChoiceRenderer` serves one choice, either whole (non-streamed) or delta by delta (streamed),
keeping the logprobs' text offsets running across deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import RequestOutput
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.common import LogProbs, NewLogProbs, RawOutput
from firebox.protocol.params import GenerationParams
from firebox.serving.generation.choice import ChoiceState
from firebox.serving.generation.logprobs import LogprobFormatter, Position, output_positions, prompt_positions
from firebox.serving.output_parsing import OutputParser, ParsedDelta
from firebox.serving.reasoning import count_reasoning_tokens
from firebox.serving.tools.calling import ToolCall
from firebox.serving.generation.run import GenerationRun
from firebox.serving.generation.sampling import LogprobMode


class ChoiceRenderer:
    def __init__(
        self, tokenizer: Tokenizer, mode: LogprobMode, choice: ChoiceState, parser: OutputParser | None = None
    ) -> None:
        self._tokenizer = tokenizer
        self._mode = mode
        self.choice = choice
        self._formatter = LogprobFormatter(tokenizer, mode.num_top)
        self._parser = parser  # splits tool calls (and reasoning) out of the text; None: all content
        self._parsed_whole: ParsedDelta | None = None

    @property
    def finish_reason(self) -> str | None:
        """The choice's, except that an output that ended in tool calls says so."""
        reason = self.choice.finish_reason
        if reason == "stop" and self._parser is not None and self._parser.calls:
            return "tool_calls"
        return reason

    def _format(self, positions: Sequence[Position]) -> NewLogProbs | LogProbs | None:
        if self._mode.form == "new":
            return self._formatter.new_form(positions)
        if self._mode.form == "legacy":
            return self._formatter.legacy_form(positions)
        return None

    def _echo_positions(self) -> list[Position]:
        choice = self.choice
        return prompt_positions(choice.prompt.token_ids, choice.prompt_logprobs, choice.echo_count)

    # --- whole choice -------------------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.choice.echo_text + self.choice.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self._parser.calls if self._parser is not None else []

    def parsed(self) -> ParsedDelta:
        """The whole output split into content, tool calls and reasoning (once; cached)."""
        if self._parsed_whole is None:
            if self._parser is None:
                self._parsed_whole = ParsedDelta(content=self.text)
            else:
                whole = ParsedDelta(content=self.choice.echo_text).add(self._parser.feed(self.choice.text))
                self._parsed_whole = whole.add(self._finish_parsing(self._parser))
        return self._parsed_whole

    def _finish_parsing(self, parser: OutputParser) -> ParsedDelta:
        """What the parser held back; the thinking's tokens are known once the output has ended."""
        rest = parser.finish()
        ids, state = self.choice.token_ids, parser.reasoning_state
        self.choice.num_reasoning_tokens = count_reasoning_tokens(self._tokenizer, ids, state)
        return rest

    def logprobs(self) -> NewLogProbs | LogProbs | None:
        if not self._mode.enabled:
            return None
        return self._format(self._echo_positions() + output_positions(self.choice.logprobs))

    def choice_fields(self, req: GenerationParams) -> dict[str, Any]:
        """What a response choice holds besides its text, for both endpoints."""
        return {
            "index": self.choice.index,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs(),
            "raw_output": self.raw_output() if req.raw_output else None,
            "token_ids": self.choice.token_ids if req.return_token_ids else None,
        }

    def raw_output(self) -> RawOutput:
        """Prompt and completion before any parsing; the completion includes what echo returns."""
        choice = self.choice
        completion_logprobs = None
        if self._mode.enabled:
            formatter = LogprobFormatter(self._tokenizer, self._mode.num_top)
            completion_logprobs = formatter.new_form(self._echo_positions() + output_positions(choice.logprobs))
        return RawOutput(
            prompt_fragments=choice.prompt.fragments,
            prompt_token_ids=choice.prompt.token_ids,
            completion=self.text,
            completion_token_ids=choice.echo_ids + choice.token_ids,
            completion_logprobs=completion_logprobs,
        )

    # --- streamed, delta by delta -------------------------------------------------------------

    def echo_logprobs(self) -> NewLogProbs | LogProbs | None:
        """Logprobs of the echoed prompt, sent in the choice's first chunk."""
        if not self._mode.enabled or not self.choice.echo_count:
            return None
        return self._format(self._echo_positions())

    def parse_delta(self, output: RequestOutput) -> ParsedDelta:
        """One engine delta split as `parsed()` splits the whole output."""
        if self._parser is None:
            return ParsedDelta(content=output.text_delta)
        parsed = self._parser.feed(output.text_delta)
        return parsed.add(self._finish_parsing(self._parser)) if output.finished else parsed

    def delta_logprobs(self, output: RequestOutput) -> NewLogProbs | LogProbs | None:
        if not self._mode.enabled:
            return None
        return self._format(output_positions(output.logprobs or []))


@dataclass(frozen=True, slots=True)
class Delta:
    """One engine delta worth a chunk."""

    renderer: ChoiceRenderer
    output: RequestOutput
    is_last: bool  # the request's last delta: its chunk carries usage and perf metrics

    def choice_fields(self, req: GenerationParams) -> dict[str, Any]:
        """What a chunk's choice holds besides its text, for both endpoints."""
        finished = self.output.finished
        return {
            "index": self.renderer.choice.index,
            "finish_reason": self.renderer.finish_reason if finished else None,
            "logprobs": self.renderer.delta_logprobs(self.output),
            "raw_output": self.renderer.raw_output() if req.raw_output and finished else None,
            "token_ids": list(self.output.new_token_ids) if req.return_token_ids else None,
        }

    def chunk_extras(self, req: GenerationParams, run: GenerationRun) -> dict[str, Any]:
        return {
            "usage": run.usage() if self.is_last else None,
            "perf_metrics": run.perf_metrics() if self.is_last and req.perf_metrics_in_response else None,
        }


async def deltas(run: GenerationRun, renderers: Sequence[ChoiceRenderer]) -> AsyncIterator[Delta]:
    """The run's deltas that carry text, tokens or an end."""
    async for choice, output in run.events():
        if output.text_delta or output.new_token_ids or output.finished:
            yield Delta(renderers[choice.index], output, output.finished and run.finished)
