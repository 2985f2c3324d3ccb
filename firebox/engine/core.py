"""The engine core: one `step()` turns waiting work into outputs.

schedule -> execute (the injected `ModelExecutor`; the core imports no torch) -> update ->
detokenize -> outputs. Single-threaded: `engine/client.py` drives it from its own thread.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

from firebox.config import CacheConfig, SchedulerConfig
from firebox.engine.detokenizer import IncrementalDetokenizer
from firebox.engine.kv_cache import KVCacheManager
from firebox.engine.request import Request
from firebox.engine.scheduler import RequestUpdate, Scheduler
from firebox.engine.speculation import DraftModelProposer, NgramProposer, Proposer
from firebox.engine.stats import EngineStats
from firebox.engine.structured_output import GrammarCompiler
from firebox.engine.types import (
    EngineRequest,
    FinishReason,
    ModelExecutor,
    PromptTooLongError,
    RequestOutput,
    SchedulerOutput,
    TokenLogprob,
)
from firebox.loader.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

MAX_FAILED_STEPS = 3  # failed steps in a row before the exception stops the engine


class EngineCore:
    def __init__(self, executor: ModelExecutor, scheduler: Scheduler, tokenizer: Tokenizer) -> None:
        self.executor = executor
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self._compiling: list[Request] = []  # constrained requests whose grammar is not compiled yet
        self._failures: list[str] = []  # requests failed inside a step, for take_failures()
        self._num_failed_steps = 0  # in a row
        self.draft_proposer: DraftModelProposer | None = None  # set by engine/build.py with a draft model

    def _server_proposer(self) -> Proposer | None:
        """The drafts of requests without a prediction: what `SchedulerConfig.speculative` says."""
        method = self.scheduler.config.speculative
        if method == "ngram":
            return NgramProposer()
        if method == "draft":
            return self.draft_proposer
        return None

    @functools.cached_property
    def grammars(self) -> GrammarCompiler:
        """Built at the first constrained request: an engine that never sees one starts no thread."""
        return GrammarCompiler(self.tokenizer, self.tokenizer.vocab_size, self.scheduler.eos_token_ids)

    @property
    def max_model_len(self) -> int:
        return self.scheduler.max_model_len

    def add_request(self, request: EngineRequest) -> None:
        """Queue a request. Raises PromptTooLongError (prompt leaves no room for one token, or
        exceeds the KV pool), QueueFullError (waiting queue full) or ValueError (id in use)."""
        num_prompt_tokens = len(request.prompt_token_ids)
        if num_prompt_tokens >= self.max_model_len:
            raise PromptTooLongError(num_prompt_tokens, self.max_model_len)
        if request.structured_output is not None and request.sampling.min_tokens:
            raise ValueError("min_tokens cannot be combined with structured output")
        req = Request.from_engine_request(request)
        req.detokenizer = IncrementalDetokenizer(self.tokenizer, request.sampling, request.prompt_token_ids)
        if req.proposer is None:
            req.proposer = self._server_proposer()
        self.scheduler.add_request(req)
        if request.structured_output is not None:
            req.grammar = self.grammars.submit(request.structured_output)
            self._compiling.append(req)

    def abort(self, request_ids: Sequence[str]) -> list[RequestOutput]:
        """Finish the known ones now (blocks freed); returns their final ABORT deltas."""
        return [self._output(RequestUpdate(req, [], None), "") for req in self.scheduler.abort(request_ids)]

    def abort_all(self) -> list[RequestOutput]:
        return self.abort(list(self.scheduler.requests))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[RequestOutput]:
        """One step's outputs. An exception fails the requests it can be pinned on (one request's
        detokenizing: that request; the batch's forward pass: the batch's requests), which
        `take_failures` then returns, and the engine goes on; only `MAX_FAILED_STEPS` failed
        steps in a row, a broken engine rather than a bad request, propagate."""
        failed = self._fail_uncompiled_grammars()
        batch = self.scheduler.schedule()
        if batch.is_empty:
            self._wait_for_grammars()
            return failed
        try:
            result = self.executor.execute(self._with_token_bitmask(batch))
            updates = self.scheduler.update(batch, result)
        except Exception as exc:
            self._num_failed_steps += 1
            if self._num_failed_steps >= MAX_FAILED_STEPS:
                raise
            self._fail([s.request_id for s in batch.requests], exc)
            return failed
        self._num_failed_steps = 0
        return failed + [out for update in updates if (out := self._output_or_fail(update)) is not None]

    def take_failures(self) -> list[str]:
        """Ids of the requests that failed inside a step since the last call (they are finished)."""
        failures, self._failures = self._failures, []
        return failures

    def _output_or_fail(self, update: RequestUpdate) -> RequestOutput | None:
        try:
            return self._output(update, self._detokenize(update))
        except Exception as exc:
            self._fail([update.request.request_id], exc)
            return None

    def _fail(self, request_ids: list[str], exc: Exception) -> None:
        logger.error("engine step failed; failing requests %s", request_ids, exc_info=exc)
        for request_id in request_ids:
            if (req := self.scheduler.requests.get(request_id)) is not None:
                self.scheduler.finish_request(req, FinishReason.ERROR, "internal error")
            self._failures.append(request_id)

    def _fail_uncompiled_grammars(self) -> list[RequestOutput]:
        """Forget the requests whose grammar compiled; finish with ERROR those whose did not."""
        if not self._compiling:
            return []
        outputs, still_compiling = [], []
        for req in self._compiling:
            if req.is_finished:  # aborted while compiling
                req.grammar.cancel()
            elif not req.grammar.is_compiled:
                still_compiling.append(req)
            elif (error := req.grammar.error) is not None:
                self.scheduler.finish_request(req, FinishReason.ERROR, error)
                outputs.append(self._output(RequestUpdate(req, [], None), ""))
        self._compiling = still_compiling
        return outputs

    def _wait_for_grammars(self) -> None:
        """Nothing can run until a grammar compiles: wait for one, briefly, instead of spinning."""
        if self._compiling:
            self.grammars.wait_for_any([req.grammar for req in self._compiling], timeout=0.01)

    def _with_token_bitmask(self, batch: SchedulerOutput) -> SchedulerOutput:
        """The batch with the allowed tokens of every constrained request that samples in it."""
        requests = self.scheduler.requests
        constrained = [
            (s.request_id, grammar, s.draft_token_ids)
            for s in batch.requests
            if s.sample and (grammar := requests[s.request_id].grammar) is not None
        ]
        if not constrained:
            return batch
        return dataclasses.replace(batch, token_bitmask=self.grammars.fill_bitmask(constrained))

    def stats(self) -> EngineStats:
        kv = self.scheduler.kv
        return EngineStats(
            num_running=self.scheduler.num_running,
            num_waiting=self.scheduler.num_waiting,
            kv_cache_usage=kv.usage,
            prefix_cache_queries=kv.prefix_stats.queries,
            prefix_cache_hits=kv.prefix_stats.hits,
            num_preemptions=self.scheduler.num_preemptions,
            num_draft_tokens=self.scheduler.num_draft_tokens,
            num_accepted_draft_tokens=self.scheduler.num_accepted_draft_tokens,
        )

    def _detokenize(self, update: RequestUpdate) -> str:
        """Text delta of the update; a stop string finishes the request here and now."""
        req, token_ids = update.request, update.new_token_ids
        if req.ended_by_stop_token and not req.sampling.include_stop_str_in_output:
            token_ids = token_ids[:-1]
        detokenizer: IncrementalDetokenizer = req.detokenizer
        stop_string = detokenizer.update(token_ids, req.num_output_tokens)
        if stop_string is not None:
            if req.is_finished:  # same step as a length limit: the stop string wins
                req.finish_reason, req.stop_reason = FinishReason.STOP, stop_string
            else:
                self.scheduler.finish_request(req, FinishReason.STOP, stop_string)
        return detokenizer.take_delta(finished=req.is_finished)

    def _output(self, update: RequestUpdate, text_delta: str) -> RequestOutput:
        req = update.request
        is_first = req.num_outputs == 0
        req.num_outputs += 1
        return RequestOutput(
            request_id=req.request_id,
            new_token_ids=update.new_token_ids,
            text_delta=text_delta,
            logprobs=_logprobs_if_asked(req, update),
            prompt_logprobs=_prompt_logprobs(req) if is_first else None,
            finish_reason=req.finish_reason,
            stop_reason=req.stop_reason,
            num_prompt_tokens=req.num_prompt_tokens,
            num_cached_tokens=req.num_cached_tokens,
            timings=dataclasses.replace(req.timings),  # a copy: the core keeps writing its own
            num_draft_tokens=req.num_draft_tokens,
            num_accepted_draft_tokens=req.num_accepted_draft_tokens,
        )


def _logprobs_if_asked(req: Request, update: RequestUpdate) -> list[TokenLogprob] | None:
    if req.sampling.logprobs is None:
        return None
    return list(update.new_logprobs or [])


def _prompt_logprobs(req: Request) -> list[TokenLogprob | None] | None:
    """Entry 0 (the first prompt token has no context) is None; the runner's chunks hold the rest."""
    if req.sampling.prompt_logprobs is None or req.needs_prompt_logprobs:
        return None
    return [None, *req.prompt_logprobs]


def build_engine_core(
    executor: ModelExecutor,
    tokenizer: Tokenizer,
    *,
    cache_config: CacheConfig,
    scheduler_config: SchedulerConfig,
    max_model_len: int,
    eos_token_ids: Sequence[int],
) -> EngineCore:
    """Wire a core over an executor whose KV pool holds `executor.num_kv_blocks` blocks."""
    kv_cache = KVCacheManager(cache_config, executor.num_kv_blocks)
    scheduler = Scheduler(scheduler_config, kv_cache, max_model_len=max_model_len, eos_token_ids=eos_token_ids)
    return EngineCore(executor, scheduler, tokenizer)
