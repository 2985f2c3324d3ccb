"""A request's state inside the engine core, and the status machine it moves through.

The scheduler makes `num_computed_tokens` (tokens whose KV is in the cache) catch up with
`num_tokens` (prompt + generated so far). Preemption by recompute sets it back to zero and keeps
the generated tokens: on resume they are computed again as if they were part of the prompt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from firebox.engine.speculation import MAX_PREDICTION_DRAFT_TOKENS, DraftBudget, PredictionProposer, Proposer
from firebox.engine.types import EngineRequest, FinishReason, RequestTimings, SamplingParams, TokenLogprob


class RequestStatus(enum.Enum):
    WAITING = enum.auto()  # queued, holds no blocks
    RUNNING = enum.auto()  # holds blocks; scheduled every step it fits the budget
    PREEMPTED = enum.auto()  # blocks taken back; queued again for recompute
    FINISHED = enum.auto()  # blocks freed; the scheduler has forgotten it


_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.WAITING: frozenset({RequestStatus.RUNNING, RequestStatus.FINISHED}),
    RequestStatus.RUNNING: frozenset({RequestStatus.PREEMPTED, RequestStatus.FINISHED}),
    RequestStatus.PREEMPTED: frozenset({RequestStatus.WAITING, RequestStatus.RUNNING, RequestStatus.FINISHED}),
    RequestStatus.FINISHED: frozenset(),
}


@dataclass(eq=False, slots=True)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    timings: RequestTimings
    priority: int = 0
    cache_salt: str | None = None  # hook: requests with different salts never share prefix blocks
    tenant: str | None = None  # fairness between tenants when requests wait
    output_token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0  # KV already written; catches up with num_tokens
    num_cached_tokens: int = 0  # prefix-cache hit at first schedule (reported as cached_tokens)
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list[bytes] = field(default_factory=list)  # of the full blocks of all_token_ids
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)  # positions 1.. so far
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    ended_by_stop_token: bool = False  # EOS or a stop token id ended it: that token is not text
    num_preemptions: int = 0
    num_outputs: int = 0  # deltas emitted; prompt logprobs go in the first
    detokenizer: Any = field(default=None, repr=False)  # engine/detokenizer.py state, owned by the core
    grammar: Any = field(default=None, repr=False)  # structured_output.RequestGrammar; None = unconstrained
    proposer: Proposer | None = field(default=None, repr=False)  # speculation: guesses the next tokens
    draft_budget: DraftBudget = field(default_factory=DraftBudget, repr=False)
    num_draft_tokens: int = 0  # drafted tokens verified so far
    num_accepted_draft_tokens: int = 0  # of which kept
    arrival_seq: int = 0  # set by the scheduler at add time: FCFS tie-break among equal arrivals
    _all_token_ids: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError("prompt must hold at least one token")
        self._all_token_ids = [*self.prompt_token_ids, *self.output_token_ids]

    @classmethod
    def from_engine_request(cls, req: EngineRequest) -> Request:
        predicted = bool(req.prediction_token_ids)
        return cls(
            request_id=req.request_id,
            prompt_token_ids=list(req.prompt_token_ids),
            sampling=req.sampling,
            timings=RequestTimings(arrival=req.arrival_time),
            priority=req.priority,
            cache_salt=req.cache_salt,
            tenant=req.tenant,
            proposer=PredictionProposer(req.prediction_token_ids) if predicted else None,
            draft_budget=_prediction_budget() if predicted else DraftBudget(),
        )

    # --- sizes and views ---------------------------------------------------------------------

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt + output tokens. Read-only: append through `append_output_token`."""
        return self._all_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self._all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def sort_key(self) -> tuple[int, float, int]:
        """Scheduling order: lower priority value first, then first come, first served."""
        return (self.priority, self.timings.arrival, self.arrival_seq)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    @property
    def is_schedulable(self) -> bool:
        """False while the request's grammar is still compiling: it waits, others go ahead."""
        return self.grammar is None or self.grammar.is_ready

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Prompt logprobs are asked for and not all of them are in yet."""
        wanted = self.sampling.prompt_logprobs is not None
        return wanted and len(self.prompt_logprobs) < self.num_prompt_tokens - 1

    # --- mutation ---------------------------------------------------------------------------

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self._all_token_ids.append(token_id)

    def record_drafts(self, num_drafted: int, num_accepted: int) -> None:
        self.num_draft_tokens += num_drafted
        self.num_accepted_draft_tokens += num_accepted
        self.draft_budget.record(num_drafted, num_accepted)

    def set_status(self, status: RequestStatus) -> None:
        if status not in _TRANSITIONS[self.status]:
            raise ValueError(f"request {self.request_id}: bad transition {self.status.name} -> {status.name}")
        self.status = status


def _prediction_budget() -> DraftBudget:
    """A prediction drafts longer runs and never pauses: it realigns with the output by content."""
    return DraftBudget(max_tokens=MAX_PREDICTION_DRAFT_TOKENS, max_pause=0)
