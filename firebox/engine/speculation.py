"""Speculative decoding: proposals of several next tokens, verified in one forward pass.

A proposer guesses how a request continues; the scheduler puts the guesses (drafts) after the
request's last token, the runner samples every position as it would have one at a time, and the
scheduler keeps the longest run of drafts that match what was sampled, plus the token sampled
after it. Because each position samples from the same distribution, with the same seeded
uniform, as plain decoding would at that position, the output is the same with and without
speculation: token for token when greedy, and for a seeded request too. (A draft is a
deterministic proposal, so "sample, accept while equal" is exactly Leviathan et al.'s
accept-with-probability-p rule with q = 1, and the residual is p without the draft.)

Proposers:
- `PredictionProposer`: the request's predicted output (`prediction`), re-aligned to the output
  by its last tokens, so a wrong word does not waste the rest of the prediction;
- `NgramProposer`: earlier occurrences of the output's last tokens in the prompt and output;
- `DraftModelProposer`: a smaller model with the same vocabulary, decoding greedily in an engine
  core of its own.
`DraftBudget` turns speculation down when it does not pay: fewer drafts as acceptance drops, and
none when the batch is large enough that the step is compute-bound.
"""

from __future__ import annotations

import array
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from firebox.engine.types import EngineRequest, SamplingParams

if TYPE_CHECKING:
    from firebox.engine.types import RequestOutput

MAX_DRAFT_TOKENS = 8  # per request and step
# A prediction is the user's own guess at most of the answer (an edited file): when it holds, it
# holds for long runs, and a step of 17 tokens costs a small model on CPU not much more than one of 9
MAX_PREDICTION_DRAFT_TOKENS = 16
MIN_MATCH = 2  # tokens of context a lookup must match (1 proposes too much noise)
MAX_MATCH = 8


class Proposer(Protocol):
    """Guesses the next tokens of one request."""

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], max_tokens: int) -> list[int]:
        """Up to `max_tokens` tokens likely to follow `output_ids`; [] when there is no guess."""
        ...


def _continuation(source: Sequence[int], context: Sequence[int], max_tokens: int, search_end: int) -> list[int]:
    """What followed the most recent earlier occurrence in `source[:search_end]` of the longest
    tail of `context` (between MIN_MATCH and MAX_MATCH tokens).

    The search is `bytes.rfind` over the tokens packed as int32 (a match must start on a token
    boundary): a Python loop over a few thousand tokens costs milliseconds per request per step."""
    haystack = array.array("i", source[:search_end]).tobytes()
    width = array.array("i").itemsize
    for n in range(min(MAX_MATCH, len(context)), MIN_MATCH - 1, -1):
        needle = array.array("i", context[-n:]).tobytes()
        end = len(haystack)
        while (found := haystack.rfind(needle, 0, end)) >= 0:
            if found % width == 0:
                start = found // width + n
                return list(source[start : start + max_tokens])
            end = found + len(needle) - 1
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


class DraftEngine(Protocol):
    """The part of an `EngineCore` a draft model is driven through."""

    max_model_len: int

    def add_request(self, request: EngineRequest) -> None: ...

    def has_unfinished(self) -> bool: ...

    def step(self) -> list[RequestOutput]: ...


class DraftModelProposer:
    """Greedy continuations from a draft model's own engine core, one short request per proposal.

    Nothing needs rolling back when drafts are rejected: each proposal is a new request over the
    whole context, and the draft core's prefix cache hands back the blocks it computed for the
    previous proposal, so only the tokens since then (and the partial last block) are computed.
    """

    def __init__(self, engine: DraftEngine) -> None:
        self._engine = engine
        self._ids = itertools.count()

    def propose(self, prompt_ids: Sequence[int], output_ids: Sequence[int], max_tokens: int) -> list[int]:
        context = (*prompt_ids, *output_ids)
        max_tokens = min(max_tokens, self._engine.max_model_len - len(context) - 1)
        if max_tokens <= 0:
            return []
        sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        self._engine.add_request(EngineRequest(f"draft-{next(self._ids)}", context, sampling, time.monotonic()))
        drafts: list[int] = []
        while self._engine.has_unfinished():
            for output in self._engine.step():
                drafts.extend(output.new_token_ids)
        return drafts


MAX_DRAFT_PAUSE = 16  # steps a request drafts nothing after proposals that were all rejected


@dataclass(slots=True)
class DraftBudget:
    """How many drafts a request gets: more while they are accepted, fewer as they are not, and
    none for a while after proposals that were wholly rejected (1, 3, 7, ... steps, at most
    MAX_DRAFT_PAUSE): on CPU a verified row costs nearly what a decoded one does, so guesses that
    keep missing (n-gram lookup in free chat) would slow the request they are meant to speed up."""

    num_tokens: int = 4
    max_tokens: int = MAX_DRAFT_TOKENS
    max_pause: int = MAX_DRAFT_PAUSE  # 0 for a prediction: it realigns by content, a miss says nothing
    num_drafted: int = 0
    num_accepted: int = 0
    num_misses: int = 0  # wholly rejected proposals in a row
    pause: int = 0  # steps left without drafts

    def next_size(self) -> int:
        """Drafts to propose this step (0 while paused); called once per step the request could draft."""
        if self.pause:
            self.pause -= 1
            return 0
        return self.num_tokens

    def record(self, num_drafted: int, num_accepted: int) -> None:
        self.num_drafted += num_drafted
        self.num_accepted += num_accepted
        if not num_drafted:
            return
        if num_accepted == num_drafted:
            self.num_tokens = min(self.max_tokens, self.num_tokens * 2)
        else:
            self.num_tokens = max(1, num_accepted + 1)
        self.num_misses = self.num_misses + 1 if num_accepted == 0 else 0
        if self.num_misses:
            self.pause = min(self.max_pause, 2**self.num_misses - 1)
