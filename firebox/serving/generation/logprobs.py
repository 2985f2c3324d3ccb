"""Engine logprobs -> the API's two forms: OpenAI's `content[]` and the legacy parallel lists.

Echoed prompt tokens come first when echo is on; the very first prompt token has no
logprob (nothing precedes it): null in the legacy form, 0.0 in the OpenAI form (whose
`logprob` is not nullable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from firebox.engine.types import TokenLogprob
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.common import LogProbs, NewLogProbs, NewLogProbsContent, NewLogProbsContentTopLogProbs


@dataclass(slots=True)
class Position:
    """One token of the returned text with its logprob; logprob None for the first prompt token."""

    token_id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


def output_positions(logprobs: Sequence[TokenLogprob]) -> list[Position]:
    return [Position(lp.token_id, lp.logprob, lp.top) for lp in logprobs]


def prompt_positions(
    prompt_ids: Sequence[int], prompt_logprobs: Sequence[TokenLogprob | None] | None, count: int
) -> list[Position]:
    """Positions of the last `count` prompt tokens."""
    if count == 0:
        return []
    start = len(prompt_ids) - count
    entries = list(prompt_logprobs or [])
    positions = []
    for i in range(start, len(prompt_ids)):
        entry = entries[i] if i < len(entries) else None
        if entry is None:
            positions.append(Position(prompt_ids[i], None))
        else:
            positions.append(Position(prompt_ids[i], entry.logprob, entry.top))
    return positions


class LogprobFormatter:
    """Builds logprobs for a choice, chunk by chunk, keeping the text offset running."""

    def __init__(self, tokenizer: Tokenizer, num_top: int) -> None:
        self._tokenizer = tokenizer
        self._num_top = num_top
        self.text_offset = 0

    def _advance(self, token_id: int) -> tuple[str, int]:
        text = self._tokenizer.token_text(token_id)
        offset = self.text_offset
        self.text_offset += len(text)
        return text, offset

    def new_form(self, positions: Sequence[Position]) -> NewLogProbs:
        return NewLogProbs(content=[self._content(p) for p in positions])

    def _content(self, position: Position) -> NewLogProbsContent:
        text, offset = self._advance(position.token_id)
        logprob = 0.0 if position.logprob is None else position.logprob
        top = position.top[: self._num_top]
        if position.logprob is None and self._num_top:
            top = [(position.token_id, 0.0)]
        return NewLogProbsContent(
            token=text,
            logprob=logprob,
            bytes=list(self._tokenizer.token_bytes(position.token_id)),
            token_id=position.token_id,
            text_offset=offset,
            top_logprobs=[self._top_entry(token_id, lp) for token_id, lp in top],
        )

    def _top_entry(self, token_id: int, logprob: float) -> NewLogProbsContentTopLogProbs:
        return NewLogProbsContentTopLogProbs(
            token=self._tokenizer.token_text(token_id),
            logprob=logprob,
            token_id=token_id,
            bytes=list(self._tokenizer.token_bytes(token_id)),
        )

    def legacy_form(self, positions: Sequence[Position]) -> LogProbs:
        tokens, offsets, logprobs, tops = [], [], [], []
        for position in positions:
            text, offset = self._advance(position.token_id)
            tokens.append(text)
            offsets.append(offset)
            logprobs.append(position.logprob)
            tops.append(None if position.logprob is None else self._legacy_top(position, text))
        token_ids = [p.token_id for p in positions]
        return LogProbs(
            tokens=tokens, token_logprobs=logprobs, top_logprobs=tops, text_offset=offsets, token_ids=token_ids
        )

    def _legacy_top(self, position: Position, text: str) -> dict[str, float]:
        """Up to num_top alternatives plus the sampled token, as OpenAI's legacy form has it."""
        top = {self._tokenizer.token_text(t): lp for t, lp in position.top[: self._num_top]}
        top.setdefault(text, position.logprob)
        return top
