"""The running state of one choice (one engine request) of an API request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from firebox.engine.types import EngineDeadError, FinishReason, RequestOutput, RequestTimings, TokenLogprob
from firebox.serving.prompt import PreparedPrompt


@dataclass(slots=True)
class ChoiceState:
    index: int  # the choice's index in the response
    prompt_index: int  # which prompt of the request it continues
    prompt: PreparedPrompt
    echo_count: int  # prompt tokens echoed before the output (0: no echo)
    echo_text: str
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # the stop string (or token id) that ended it
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_reasoning_tokens: int = 0  # of token_ids, those spent thinking (set by the output parsing)
    num_draft_tokens: int = 0  # speculation: drafted tokens verified so far
    num_accepted_draft_tokens: int = 0  # of which kept
    timings: RequestTimings | None = None
    first_output_at: float | None = None  # monotonic time the first delta arrived

    def update(self, output: RequestOutput) -> None:
        if self.first_output_at is None:
            self.first_output_at = time.monotonic()
        self.token_ids.extend(output.new_token_ids)
        self.text += output.text_delta
        if output.logprobs:
            self.logprobs.extend(output.logprobs)
        if output.prompt_logprobs is not None:
            self.prompt_logprobs = output.prompt_logprobs
        self.num_prompt_tokens = output.num_prompt_tokens
        self.num_cached_tokens = output.num_cached_tokens
        self.num_draft_tokens = output.num_draft_tokens
        self.num_accepted_draft_tokens = output.num_accepted_draft_tokens
        self.timings = output.timings
        if output.finish_reason == FinishReason.ABORT:
            raise EngineDeadError("the engine stopped the request before it finished")
        if output.finish_reason is not None:
            self.finish_reason = str(output.finish_reason)
            self.stop_reason = output.stop_reason

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def echo_ids(self) -> list[int]:
        ids = self.prompt.token_ids
        return ids[len(ids) - self.echo_count :]

    @property
    def first_token_time(self) -> float | None:
        """When the first token was ready: the engine's mark, else when its first delta came."""
        if self.timings is not None and self.timings.first_token is not None:
            return self.timings.first_token
        return self.first_output_at
