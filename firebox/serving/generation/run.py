"""One API request in flight: its engine requests, its choices' state, and its end.

`GenerationRun` owns the merged engine stream. `start()` waits for the first delta (so that a
full queue or an over-long prompt is still an HTTP error for a stream), `events()` yields each
delta after applying it to its choice, and `close()` closes the engine streams (aborting what is
still running) and hands the request record to the callbacks, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import EngineRequest, FinishReason, RequestOutput
from firebox.protocol.common import UsageInfo
from firebox.request_record import RequestRecord
from firebox.serving.generation.choice import ChoiceState
from firebox.serving.errors import InvalidRequestError, status_of
from firebox.serving.generation.fanout import aclose_quietly, merge_streams
from firebox.serving.inflight import InflightLease
from firebox.serving.generation.metrics import perf_metrics, prompt_token_counts, usage
from firebox.serving.records import RequestContext, RequestRecorder
from firebox.serving.registry import ModelHandle

CLIENT_CLOSED = 499  # status recorded for a non-streamed request whose client went away
CRASHED = 500  # status of the record journaled at the start: what stands if the server dies mid-request


@dataclass(frozen=True, slots=True)
class ServeMeta:
    """What the API layer turns into headers."""

    request_id: str
    sampling_options: dict[str, Any]
    perf_metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunInfo:
    handle: ModelHandle
    ctx: RequestContext
    submitted: float  # monotonic: the engine requests were built
    sampling_options: dict[str, Any]
    user: str | None = None
    metadata: dict[str, str] | None = None
    num_prediction_tokens: int = 0  # tokens of the request's prediction (speculation perf metrics)


class GenerationRun:
    def __init__(
        self, info: RunInfo, requests: Sequence[EngineRequest], choices: list[ChoiceState], recorder: RequestRecorder,
        lease: InflightLease | None = None,
    ) -> None:  # fmt: skip
        self.info = info
        self.choices = choices
        self._recorder = recorder
        self._lease = lease  # the caller's in-flight share, given back at close()
        try:
            recorder.begin(self._record(CRASHED, aborted=True))  # the request as it stands if the server dies now
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        self._stream = merge_streams(info.handle.engine, requests)
        self._buffered: list[tuple[int, RequestOutput]] = []
        self._closed = False

    async def start(self) -> None:
        """Wait for the first delta; engine errors before it are raised here."""
        try:
            index, output = await anext(self._stream)
        except StopAsyncIteration:
            return
        self._buffered.append((index, output))
        self._apply(index, output)

    async def events(self) -> AsyncIterator[tuple[ChoiceState, RequestOutput]]:
        for index, output in self._buffered:
            yield self.choices[index], output
        self._buffered.clear()
        async for index, output in self._stream:
            yield self._apply(index, output), output

    def _apply(self, index: int, output: RequestOutput) -> ChoiceState:
        """Update the choice; an engine request that could not run (its grammar did not compile)
        fails the whole API request with a 400 that says why."""
        if output.finish_reason is FinishReason.ERROR:
            raise InvalidRequestError(f"response_format: {output.stop_reason}", param="response_format")
        choice = self.choices[index]
        choice.update(output)
        return choice

    @property
    def finished(self) -> bool:
        return all(c.finished for c in self.choices)

    def usage(self) -> UsageInfo:
        return usage(self.choices, has_prediction=self.info.num_prediction_tokens > 0)

    def end_time(self) -> float:
        ends = [c.timings.finished for c in self.choices if c.timings and c.timings.finished is not None]
        return max(ends) if len(ends) == len(self.choices) else time.monotonic()

    def perf_metrics(self) -> dict[str, Any]:
        end = self.end_time() if self.finished else None
        info = self.info
        metrics = perf_metrics(self.choices, info.ctx.arrival_time, info.submitted, end, info.num_prediction_tokens)
        route_metrics = self.info.handle.route_metrics
        return metrics if route_metrics is None else {**metrics, **route_metrics()}

    def meta(self) -> ServeMeta:
        return ServeMeta(self.info.ctx.request_id, self.info.sampling_options, self.perf_metrics())

    async def close(self, status_code: int, aborted: bool, must_bill: bool = False) -> None:
        """Abort whatever still runs and record the request; later calls do nothing. With
        `must_bill` (the answer is not sent yet), usage that cannot be recorded is a 503."""
        if self._closed:
            return
        self._closed = True
        try:
            await aclose_quietly(self._stream)
        finally:
            if self._lease is not None:
                self._lease.release()
            self._recorder.emit(self._record(status_code, aborted), must_bill=must_bill)

    async def close_after(self, exc: BaseException, streaming: bool = False) -> None:
        """close() for a request that ended by `exc`; a cancellation is the client leaving
        (a stream has already answered 200 by then)."""
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            await self.close(200 if streaming else CLIENT_CLOSED, aborted=True)
        else:
            await self.close(status_of(exc), aborted=False)

    def _record(self, status_code: int, aborted: bool) -> RequestRecord:
        info, ctx = self.info, self.info.ctx
        num_prompt, num_cached = prompt_token_counts(self.choices)
        first_tokens = [t for c in self.choices if (t := c.first_token_time) is not None]
        return RequestRecord(
            request_id=ctx.request_id,
            account_id=ctx.principal.account_id,
            key_id=ctx.principal.key_id,
            model=info.handle.model.name,
            deployment=info.handle.deployment,
            endpoint=ctx.endpoint,
            prompt_tokens=num_prompt,
            cached_tokens=num_cached,
            completion_tokens=sum(len(c.token_ids) for c in self.choices),
            ttft_s=min(first_tokens) - ctx.arrival_time if first_tokens else None,
            latency_s=time.monotonic() - ctx.arrival_time,
            status_code=status_code,
            aborted=aborted,
            user=info.user,
            metadata=info.metadata,
            created=ctx.created,
            finish_reason=self.choices[0].finish_reason,
        )


async def run_to_end(run: GenerationRun) -> None:
    """Consume every delta (non-streamed request) and close the run."""
    try:
        async for _ in run.events():
            pass
    except BaseException as exc:
        await run.close_after(exc)
        raise
    await run.close(200, aborted=False, must_bill=True)


async def start_stream(run: GenerationRun) -> None:
    """Wait for the first delta of a streamed request; on failure close the run and raise."""
    try:
        await run.start()
    except BaseException as exc:
        await run.close_after(exc)
        raise
