"""What chat and completions share: request -> prompts -> plan -> run -> response or stream.

A subclass supplies the prompts and the shapes of its response and chunks; this base
decides streaming or not, waits for the first delta of a stream (so early errors are still
HTTP errors), and makes sure the run is closed and recorded however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from firebox.engine.types import EngineClient, StructuredOutputSpec
from firebox.protocol.common import ResponseModel
from firebox.protocol.params import GenerationParams
from firebox.serving.errors import InvalidRequestError, ServingError, error_response
from firebox.serving.generation.output import ChoiceRenderer, Delta, deltas
from firebox.serving.inflight import InflightLimiter
from firebox.serving.output_parsing import OutputParser
from firebox.serving.generation.plan import Plan, plan_generation, start_run
from firebox.serving.prompt import PreparedPrompt
from firebox.serving.reasoning import ThinkingMode
from firebox.serving.records import RequestContext, RequestRecorder, refusal_record
from firebox.serving.registry import ModelHandle
from firebox.serving.generation.run import GenerationRun, ServeMeta, run_to_end, start_stream

logger = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=GenerationParams)
NUM_PROMPT_WORKERS = 4  # requests preparing their prompts at once, per service; more wait their turn


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What an endpoint makes of a request before planning."""

    prompts: list[PreparedPrompt]
    structured_output: StructuredOutputSpec | None = None  # the tool-call grammar, when tools may be called
    new_parser: Callable[[], OutputParser | None] | None = None  # one per choice: splits calls, thinking out
    thinking: ThinkingMode | None = None  # a thinking model's output begins so (None: it does not think)
    keep_special_tokens: bool = False  # the calls' tags are special tokens the parser must see

    def plan(self, req: GenerationParams, handle: ModelHandle, ctx: RequestContext, prompt_param: str) -> Plan:
        """`req` planned over these prompts, with the grammar and output settings prepared here."""
        return plan_generation(
            req, handle, ctx, self.prompts, prompt_param, self.structured_output,
            thinking=self.thinking, keep_special_tokens=self.keep_special_tokens,
        )  # fmt: skip


@contextlib.contextmanager
def refusal_recorded(
    recorder: RequestRecorder, ctx: RequestContext, handle: ModelHandle, req: GenerationParams | Any
) -> Iterator[None]:
    """A request refused before the engine (a ServingError) still leaves one usage record."""
    try:
        yield
    except ServingError as exc:
        recorder.emit(refusal_record(ctx, handle.model.name, handle.deployment, exc.status_code, req.user, req.metadata))
        raise


@dataclass(frozen=True, slots=True)
class Completed:
    body: ResponseModel
    meta: ServeMeta


@dataclass(frozen=True, slots=True)
class Streaming:
    """Chunks to frame as SSE; a mid-stream failure arrives as a last `ErrorResponse`."""

    chunks: AsyncIterator[ResponseModel]
    meta: ServeMeta  # as known when the first delta came


class GenerationService(ABC, Generic[RequestT]):
    endpoint: str  # the record's endpoint name
    prompt_param: str  # the field an over-long prompt is blamed on

    def __init__(self, recorder: RequestRecorder, inflight: InflightLimiter | None = None) -> None:
        self._recorder = recorder
        self._inflight = inflight  # per-key and per-account limits on choices in flight
        self._prompt_workers = ThreadPoolExecutor(NUM_PROMPT_WORKERS, thread_name_prefix="firebox-prompts")

    @abstractmethod
    def prepare(self, req: RequestT, engine: EngineClient) -> PreparedRequest:
        """Template, tokens, context policy: blocking; `prepare_off_loop` runs it for the event loop."""

    async def prepare_off_loop(self, req: RequestT, engine: EngineClient) -> PreparedRequest:
        """`prepare` on the service's own workers (not the default executor that key lookups use):
        a long conversation costs milliseconds to render and tokenize, and every other stream
        goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._prompt_workers, self.prepare, req, engine)

    @abstractmethod
    def response(self, req: RequestT, run: GenerationRun, renderers: Sequence[ChoiceRenderer]) -> ResponseModel: ...

    @abstractmethod
    def chunk(self, run: GenerationRun, choices: list[Any], **extra: Any) -> ResponseModel:
        """A stream chunk holding `choices`."""

    @abstractmethod
    def opening_choice(self, req: RequestT, renderer: ChoiceRenderer) -> tuple[Any, dict[str, Any]] | None:
        """(choice, chunk extras) that open a choice (the role, the echo, prompt ids), or None.
        Sent just before the choice's first delta, once its prompt logprobs are known."""

    @abstractmethod
    def delta_choice(self, req: RequestT, delta: Delta) -> Any:
        """The chunk choice of one engine delta."""

    async def stream_chunks(
        self, req: RequestT, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> AsyncIterator[ResponseModel]:
        opened: set[int] = set()
        async for delta in deltas(run, renderers):
            if delta.renderer.choice.index not in opened:
                opened.add(delta.renderer.choice.index)
                if (opening := self.opening_choice(req, delta.renderer)) is not None:
                    yield self.chunk(run, [opening[0]], **opening[1])
            yield self.chunk(run, [self.delta_choice(req, delta)], **delta.chunk_extras(req, run))
        if req.stream_options and req.stream_options.include_usage:  # OpenAI: a last chunk, no choices
            yield self.chunk(run, [], usage=run.usage())

    async def create(self, req: RequestT, handle: ModelHandle, ctx: RequestContext) -> Completed | Streaming:
        with refusal_recorded(self._recorder, ctx, handle, req):
            _check_stream_options(req)
            prepared = await self.prepare_off_loop(req, handle.engine)
            plan = prepared.plan(req, handle, ctx, self.prompt_param)
        run = start_run(handle, ctx, plan, self._recorder, self._inflight)
        new_parser = prepared.new_parser or (lambda: None)
        renderers = [ChoiceRenderer(handle.engine.tokenizer, plan.logprobs, c, new_parser()) for c in plan.choices]
        if req.stream:
            await start_stream(run)
            return Streaming(_closing(run, self.stream_chunks(req, run, renderers)), run.meta())
        await run_to_end(run)
        return Completed(self.response(req, run, renderers), run.meta())


def _check_stream_options(req: GenerationParams) -> None:
    if req.stream_options is not None and not req.stream:
        raise InvalidRequestError("stream_options is only allowed when stream is true", param="stream_options")


async def _closing(run: GenerationRun, chunks: AsyncIterator[ResponseModel]) -> AsyncIterator[ResponseModel]:
    """Pass chunks on; close and record the run however the stream ends."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:  # the engine failed mid-stream: tell the client, then end
        logger.warning("stream %s failed: %r", run.info.ctx.request_id, exc)
        await run.close_after(exc, streaming=True)
        yield error_response(exc)
    except BaseException as exc:  # the client went away (cancelled or closed)
        await run.close_after(exc, streaming=True)
        raise
    else:
        await run.close(200, aborted=False)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
