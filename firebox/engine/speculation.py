"""Speculative decoding: proposals of several next tokens, verified in one forward pass.

A proposer guesses how a request continues; the scheduler puts the guesses (drafts) after the
request's last token, the runner samples every position as it would have one at a time, and the
scheduler keeps the longest run of drafts that match what was sampled, plus the token sampled
after it. Because each position samples from the same distribution, with the same seeded
uniform, as plain decoding would at that position, the output is the same with and without
speculation: token for token when greedy, and for a seeded request too. (A draft is a
deterministic proposal, so "sample, accept while equal" is exactly Leviathan et al.'s
accept-with-probability-p rule with q = 1, and the residual is p without the draft.)

Proposers, both by lookup (no second model):
- `PredictionProposer`: the request's predicted output (`prediction`), re-aligned to the output
  by its last tokens, so a wrong word does not waste the rest of the prediction;
- `NgramProposer`: earlier occurrences of the output's last tokens in the prompt and output.
`DraftBudget` turns speculation down when it does not pay: fewer drafts as acceptance drops, and
none when the batch is large enough that the step is compute-bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_DRAFT_TOKENS = 8  # per request and step
MIN_MATCH = 2  # tokens of context a lookup must match (1 proposes too much noise)
MAX_MATCH = 8


class Proposer(Protocol):
    """Guesses the next tokens of one request."""

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Up to `max_tokens` tokens likely to follow `output_ids`; [] when there is no guess."""
        ...


def _continuation(source: Sequence[int], context: Sequence[int], max_tokens: int, search_end: int) -> list[int]:
    """What followed the most recent earlier occurrence in `source[:search_end]` of the longest
    tail of `context` (between MIN_MATCH and MAX_MATCH tokens)."""
    for n in range(min(MAX_MATCH, len(context)), MIN_MATCH - 1, -1):
        tail = list(context[-n:])
        for start in range(search_end - n, -1, -1):
            if list(source[start : start + n]) == tail:
                return list(source[start + n : start + n + max_tokens])
    return []


@dataclass(frozen=True, slots=True)
class PredictionProposer:
    prediction_ids: tuple[int, ...]

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], max_tokens: int) -> list[int]:
        if not output_ids:
            return list(self.prediction_ids[:max_tokens])
        return _continuation(self.prediction_ids, output_ids, max_tokens, len(self.prediction_ids))


class NgramProposer:
    """Prompt lookup: the continuation of the output's last tokens where they occurred before."""

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], max_tokens: int) -> list[int]:
        tokens = [*prompt_ids, *output_ids]
        return _continuation(tokens, tokens, max_tokens, len(tokens) - 1)


@dataclass(slots=True)
class DraftBudget:
    """How many drafts a request gets: more while they are accepted, fewer as they are not."""

    num_tokens: int = 4
    num_drafted: int = 0
    num_accepted: int = 0

    def record(self, num_drafted: int, num_accepted: int) -> None:
        self.num_drafted += num_drafted
        self.num_accepted += num_accepted
        if not num_drafted:
            return
        if num_accepted == num_drafted:
            self.num_tokens = min(MAX_DRAFT_TOKENS, self.num_tokens * 2)
        else:
            self.num_tokens = max(1, num_accepted + 1)
