"""Continuous batching with a token budget per step (vLLM v1's "computed catches up with total").

Each step, running requests go first, in scheduling order (`Request.sort_key`): a decode costs one
token, a request mid-prefill continues with a chunk of what is left of the budget, less one token
for every decode behind it, so a long prompt never stalls the decodes. Waiting requests then take
what is left, in the same order, starting with a prefix-cache lookup. When the pool cannot hold a
running request's next tokens, the last running request (lowest priority, latest arrival) is
preempted by recompute: its blocks are freed and it waits again with no computed tokens.

Blocks are indexed for prefix sharing as soon as their tokens are scheduled, so a request admitted
later in the same step (an n > 1 sibling) shares them. That is safe because the runner writes all
of a step's KV before any attention reads it (`AttentionBackend.forward`), and because a request
scheduled in a step is never preempted in that step: preemption victims come from the tail of the
running list, which the loop has not reached yet, and a step that preempts admits no one.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass

from firebox.config import SchedulerConfig
from firebox.engine.kv_cache import KVCacheManager
from firebox.engine.request import Request, RequestStatus
from firebox.engine.types import (
    FinishReason,
    ModelRunnerOutput,
    PromptTooLongError,
    QueueFullError,
    ScheduledRequest,
    SchedulerOutput,
    TokenLogprob,
)


@dataclass(slots=True)
class RequestUpdate:
    """What one step did to one request: the core turns it into a `RequestOutput`."""

    request: Request
    new_token_ids: list[int]
    new_logprobs: list[TokenLogprob] | None


def _num_verified(sampled_token_ids: list[int], rows: list[int], drafts: Sequence[int]) -> int:
    """How many of the rows' tokens to keep: each one up to the first that differs from the draft
    it was sampled in place of (that one is kept too: it is what the model chose there)."""
    for j, row in enumerate(rows):
        if j >= len(drafts) or sampled_token_ids[row] != drafts[j]:
            return j + 1
    return len(rows)


def _sort_key(req: Request) -> tuple[int, float, int]:
    return req.sort_key


def _is_decode(req: Request) -> bool:
    return req.num_tokens - req.num_computed_tokens == 1


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache: KVCacheManager,
        *,
        max_model_len: int,
        eos_token_ids: Sequence[int] = (),
    ) -> None:
        self.config = config
        self.kv = kv_cache
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.requests: dict[str, Request] = {}
        self.waiting: list[Request] = []  # sorted by sort_key
        self.running: list[Request] = []  # sorted by sort_key; the tail is preempted first
        self.num_preemptions = 0
        self.num_draft_tokens = 0  # cumulative, every request
        self.num_accepted_draft_tokens = 0
        self._num_added = 0
        self._freed_ids: set[str] = set()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # --- admission and removal --------------------------------------------------------------

    def add_request(self, req: Request) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        if len(self.waiting) >= self.config.max_waiting:
            raise QueueFullError(f"{len(self.waiting)} requests are waiting; try again later")
        if req.num_tokens > self.kv.max_num_tokens:
            raise PromptTooLongError(req.num_tokens, self.kv.max_num_tokens)
        self._num_added += 1
        req.arrival_seq = self._num_added
        self.requests[req.request_id] = req
        bisect.insort(self.waiting, req, key=_sort_key)

    def finish_request(self, req: Request, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        """End a request now (stop, length or abort) and free its blocks."""
        if req.is_finished:
            return
        queue = self.running if req.status is RequestStatus.RUNNING else self.waiting
        queue.remove(req)
        self.kv.free(req)
        req.set_status(RequestStatus.FINISHED)
        req.finish_reason, req.stop_reason = reason, stop_reason
        req.timings.finished = time.monotonic()
        del self.requests[req.request_id]
        self._freed_ids.add(req.request_id)

    def abort(self, request_ids: Sequence[str]) -> list[Request]:
        """Finish the known ones of `request_ids` with ABORT; returns them."""
        aborted = [self.requests[i] for i in dict.fromkeys(request_ids) if i in self.requests]
        for req in aborted:
            self.finish_request(req, FinishReason.ABORT)
        return aborted

    # --- one step -------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        scheduled: list[ScheduledRequest] = []
        budget, preempted = self._schedule_running(scheduled)
        if not preempted:
            self._schedule_waiting(scheduled, budget)
        # Freed ids ride on the next batch that reaches the runner, and are dropped before it.
        freed = frozenset(self._freed_ids) if scheduled else frozenset()
        if scheduled:
            self._freed_ids.clear()
        return SchedulerOutput(scheduled, sum(len(s.token_ids) for s in scheduled), freed)

    def _schedule_running(self, out: list[ScheduledRequest]) -> tuple[int, bool]:
        budget = self.config.max_num_batched_tokens
        num_decodes_behind = sum(1 for r in self.running if _is_decode(r))
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            drafts: list[int] = []
            if _is_decode(req):
                num_decodes_behind -= 1
                drafts = self._drafts(req, budget - num_decodes_behind - 1)
                num_new = 1 + len(drafts)
            else:  # a prefill chunk leaves one token for each decode behind it
                num_new = min(req.num_tokens - req.num_computed_tokens, budget - num_decodes_behind)
                if num_new <= 0:
                    i += 1
                    continue
            while not self.kv.allocate(req, num_new):
                victim = self.running[-1]
                if victim is not req and _is_decode(victim):
                    num_decodes_behind -= 1
                self._preempt(victim)
                preempted = True
                if victim is req:
                    break
            else:
                out.append(self._schedule_chunk(req, num_new, drafts))
                budget -= num_new
                i += 1
        return budget, preempted

    def _drafts(self, req: Request, max_tokens: int) -> list[int]:
        """The request's proposed continuation for this step (verified by the runner), within the
        step budget, its max_tokens, the context, the free KV blocks and its grammar."""
        if req.proposer is None or len(self.running) > self.config.max_speculative_batch:
            return []
        room = min(
            max_tokens,
            req.draft_budget.next_size(),
            req.sampling.max_tokens - req.num_output_tokens - 1,
            self.max_model_len - req.num_tokens - 1,
        )
        if room <= 0:
            return []
        drafts = req.proposer.propose(req.prompt_token_ids, req.output_token_ids, room)
        if drafts and req.grammar is not None:
            drafts = drafts[: req.grammar.matcher.validate_tokens(drafts)]
        if drafts and not self.kv.allocate(req, 1 + len(drafts)):
            return []  # no room for the drafts: decode one token, never preempt for a guess
        return drafts

    def _schedule_waiting(self, out: list[ScheduledRequest], budget: int) -> None:
        """Admit waiting requests in fair order (`_next_waiting`) while the budget, the running
        limit and the KV pool allow; the first that does not fit stops admission (nobody
        overtakes it, so a long prompt is not starved by short ones)."""
        while budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = self._next_waiting()
            if req is None:
                return
            num_cached = self.kv.match_prefix(req)
            req.num_computed_tokens = num_cached
            num_new = min(req.num_tokens - num_cached, budget)
            if not self.kv.allocate(req, num_new):
                self.kv.free(req)  # unpin the prefix hit
                req.num_computed_tokens = 0
                return
            self.waiting.remove(req)
            self._admit(req, num_cached)
            out.append(self._schedule_chunk(req, num_new))
            budget -= num_new

    def _next_waiting(self) -> Request | None:
        """The next request to admit: the best priority first; within it, the tenant with the
        fewest requests running (so one tenant's flood cannot hold back another's single
        request), then first come, first served. A request whose grammar is compiling waits."""
        running_per_tenant: dict[str | None, int] = {}
        for req in self.running:
            running_per_tenant[req.tenant] = running_per_tenant.get(req.tenant, 0) + 1
        best: Request | None = None
        best_key: tuple[int, int] | None = None
        for req in self.waiting:  # sorted by sort_key: the first of each (priority, load) wins
            if best_key is not None and req.priority > best_key[0]:
                break  # sorted by priority first: nothing after this can win
            if not req.is_schedulable:
                continue
            key = (req.priority, running_per_tenant.get(req.tenant, 0))
            if best_key is None or key < best_key:
                best, best_key = req, key
                if key[1] == 0:
                    break  # a tenant with nothing running: none can be ahead of it
        return best

    def _admit(self, req: Request, num_cached: int) -> None:
        if req.timings.scheduled is None:
            req.timings.scheduled = time.monotonic()
            req.num_cached_tokens = num_cached
        if self.kv.enable_caching:
            self.kv.prefix_stats.record(req.num_tokens, num_cached)
        req.set_status(RequestStatus.RUNNING)
        bisect.insort(self.running, req, key=_sort_key)

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.kv.free(req)
        req.num_computed_tokens = 0
        if req.needs_prompt_logprobs:
            req.prompt_logprobs.clear()  # recomputed from the start with the prompt
        req.set_status(RequestStatus.PREEMPTED)
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._freed_ids.add(req.request_id)
        bisect.insort(self.waiting, req, key=_sort_key)

    def _schedule_chunk(self, req: Request, num_new: int, drafts: Sequence[int] = ()) -> ScheduledRequest:
        start, end = req.num_computed_tokens, req.num_computed_tokens + num_new - len(drafts)
        self.kv.cache_full_blocks(req, end)
        return ScheduledRequest(
            request_id=req.request_id,
            token_ids=[*req.all_token_ids[start:end], *drafts],
            start_pos=start,
            block_ids=list(req.block_ids),
            sample=end == req.num_tokens and req.sampling.max_tokens > 0,
            sampling=req.sampling,
            output_token_ids=req.output_token_ids,
            prompt_token_ids=req.prompt_token_ids,
            seed_offset=req.num_output_tokens,
            compute_prompt_logprobs=req.needs_prompt_logprobs and start < req.num_prompt_tokens - 1,
            draft_token_ids=tuple(drafts),
        )

    # --- results of a step ------------------------------------------------------------------------

    def update(self, batch: SchedulerOutput, result: ModelRunnerOutput) -> list[RequestUpdate]:
        """Advance computed tokens, append sampled ones, finish on EOS, stop tokens or length."""
        rows_of: dict[str, list[int]] = {}
        for row, request_id in enumerate(result.request_ids):
            rows_of.setdefault(request_id, []).append(row)
        updates = []
        for sched in batch.requests:
            req = self.requests.get(sched.request_id)
            if req is None:
                continue
            rows = rows_of.get(req.request_id, [])
            num_kept = _num_verified(result.sampled_token_ids, rows, sched.draft_token_ids)
            # KV is valid for the step's own tokens and the drafts that were kept, not the rest
            req.num_computed_tokens += len(sched.token_ids) - len(sched.draft_token_ids) + max(num_kept - 1, 0)
            if sched.compute_prompt_logprobs:
                req.prompt_logprobs.extend(result.prompt_logprobs.get(req.request_id, ()))
            self.kv.cache_full_blocks(req)
            if rows:
                updates.append(self._append_sampled(req, result, rows[:num_kept], len(sched.draft_token_ids)))
                self.kv.trim(req)
            elif req.sampling.max_tokens == 0 and req.num_computed_tokens >= req.num_tokens:
                self.finish_request(req, FinishReason.LENGTH)  # prompt scoring: nothing to sample
                updates.append(RequestUpdate(req, [], None))
        return updates

    def _append_sampled(
        self, req: Request, result: ModelRunnerOutput, rows: list[int], num_drafts: int
    ) -> RequestUpdate:
        """Append the step's kept tokens in order, until one of them finishes the request."""
        token_ids: list[int] = []
        logprobs: list[TokenLogprob] | None = None if result.logprobs is None else []
        for row in rows:
            token_id = result.sampled_token_ids[row]
            req.append_output_token(token_id)
            token_ids.append(token_id)
            if logprobs is not None and (logprob := result.logprobs[row]) is not None:
                logprobs.append(logprob)
            if req.grammar is not None:
                req.grammar.accept(token_id)
            if req.timings.first_token is None:
                req.timings.first_token = time.monotonic()
            self._check_finished(req, token_id)
            if req.is_finished:
                break
        if num_drafts:
            req.record_drafts(num_drafts, len(rows) - 1)
            self.num_draft_tokens += num_drafts
            self.num_accepted_draft_tokens += len(rows) - 1
        return RequestUpdate(req, token_ids, logprobs or None)

    def _check_finished(self, req: Request, token_id: int) -> None:
        sp = req.sampling
        may_stop = req.num_output_tokens > sp.min_tokens
        # The last token needs a slot of its own once computed: beyond the pool it never fits.
        too_long = req.num_tokens >= self.max_model_len or req.num_tokens > self.kv.max_num_tokens
        if may_stop and not sp.ignore_eos and token_id in self.eos_token_ids:
            req.ended_by_stop_token = True
            self.finish_request(req, FinishReason.STOP)
        elif may_stop and token_id in sp.stop_token_ids:
            req.ended_by_stop_token = True
            self.finish_request(req, FinishReason.STOP, token_id)
        elif req.grammar is not None and req.grammar.error is not None:
            self.finish_request(req, FinishReason.ERROR, req.grammar.error)
        elif req.grammar is not None and req.grammar.is_terminated:
            self.finish_request(req, FinishReason.STOP)  # the document is complete: only EOS could follow
        elif req.num_output_tokens >= sp.max_tokens or too_long:
            self.finish_request(req, FinishReason.LENGTH)
