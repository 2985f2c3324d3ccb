"""AsyncEngine over the thread transport: the event loop talks to a core stepping on its own thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from engine_fakes import EOS, context_hash_token, make_core, make_engine_request, scripted

from firebox.engine.client import AsyncEngine
from firebox.engine.launch import run_on_thread
from firebox.engine.core import MAX_FAILED_STEPS
from firebox.engine.transport.thread import ThreadTransport
from firebox.engine.types import (
    EngineDeadError,
    FinishReason,
    ModelInfo,
    QueueFullError,
    RequestFailedError,
    SlowReaderError,
)

MODEL_INFO = ModelInfo("test", "fake", max_model_len=4096, vocab_size=320, eos_token_ids=(EOS,))


def make_engine(tokenizer, next_token=context_hash_token, **core_options) -> AsyncEngine:
    core, _ = make_core(tokenizer, next_token, **core_options)
    return run_on_thread(core, MODEL_INFO, tokenizer)


async def collect(engine, request):
    return [out async for out in engine.generate(request)]


def test_generate_end_to_end(tokenizer):
    script = tokenizer.encode("hello world")
    model = scripted({"r": [*script, EOS]})
    step_threads = set()

    def model_on_record(sched, context):
        step_threads.add(threading.current_thread())
        return model(sched, context)

    engine = make_engine(tokenizer, model_on_record)

    async def main():
        return await collect(engine, make_engine_request("r", [5, 6], max_tokens=20))

    try:
        outs = asyncio.run(main())
    finally:
        engine.shutdown()
    assert "".join(o.text_delta for o in outs) == "hello world"
    assert outs[-1].finish_reason is FinishReason.STOP
    assert step_threads == {engine.transport.thread}  # never the event loop's thread
    assert not engine.transport.thread.is_alive()


def test_concurrent_requests_each_get_their_own_stream(tokenizer):
    engine = make_engine(tokenizer)
    requests = [make_engine_request(f"r{i}", [i + 1] * (3 + i), max_tokens=5 + i, ignore_eos=True) for i in range(8)]

    async def main():
        return await asyncio.gather(*(collect(engine, r) for r in requests))

    try:
        results = asyncio.run(main())
    finally:
        engine.shutdown()
    for i, outs in enumerate(results):
        assert {o.request_id for o in outs} == {f"r{i}"}
        assert sum(len(o.new_token_ids) for o in outs) == 5 + i and outs[-1].finished
    assert engine.stats.num_running == 0 and engine.stats.kv_cache_usage == 0.0


class SteppedModel:
    """Token 5 forever; after the first token each step waits for a permit from the test, so a
    request is certainly still running when the test closes, cancels or aborts it."""

    def __init__(self) -> None:
        self.permits = threading.Semaphore(0)

    def __call__(self, sched, context) -> int:
        if sched.seed_offset >= 1 and not self.permits.acquire(timeout=10):
            raise RuntimeError("test never let the step run")
        return 5

    async def run_until(self, condition) -> None:
        """Let steps run one at a time until `condition()` holds."""
        for _ in range(1000):
            if condition():
                return
            self.permits.release()
            await asyncio.sleep(0.001)
        raise AssertionError("condition not reached")


def make_stepped_engine(tokenizer) -> tuple[AsyncEngine, SteppedModel]:
    """A pool roomy enough that a long request cannot end by itself while the test acts."""
    model = SteppedModel()
    return make_engine(tokenizer, model, num_blocks=1100), model


def long_request(request_id="r"):
    return make_engine_request(request_id, [3, 4], max_tokens=4000, ignore_eos=True)


def test_closing_the_iterator_aborts_and_frees_blocks(tokenizer):
    engine, model = make_stepped_engine(tokenizer)
    scheduler = engine.transport.core.scheduler

    async def main():
        stream = engine.generate(long_request())
        assert not (await anext(stream)).finished
        assert scheduler.kv.num_free_blocks < scheduler.kv.num_blocks
        await stream.aclose()
        await model.run_until(lambda: not engine.transport.core.has_unfinished())

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert "r" not in scheduler.requests and scheduler.kv.num_free_blocks == scheduler.kv.num_blocks
    assert engine._streams == {}


def test_cancelling_the_consumer_aborts_the_request(tokenizer):
    engine, model = make_stepped_engine(tokenizer)

    async def consume(started: asyncio.Event):
        async for _ in engine.generate(long_request()):
            started.set()

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(consume(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await model.run_until(lambda: not engine.transport.core.has_unfinished())

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert engine.transport.core.scheduler.kv.usage == 0.0


def test_explicit_abort_ends_the_stream(tokenizer):
    engine, model = make_stepped_engine(tokenizer)

    async def main():
        outs = []
        async for out in engine.generate(long_request()):
            outs.append(out)
            if len(outs) == 1:
                await engine.abort("r")
                model.permits.release(2)
        return outs

    try:
        outs = asyncio.run(main())
    finally:
        engine.shutdown()
    assert outs[-1].finish_reason is FinishReason.ABORT and len(outs) <= 3


def test_shutdown_aborts_in_flight_requests(tokenizer):
    engine, model = make_stepped_engine(tokenizer)

    async def main():
        stream = engine.generate(long_request())
        await anext(stream)
        stopper = threading.Thread(target=engine.shutdown)
        stopper.start()
        await model.run_until(lambda: not stopper.is_alive())
        rest = [out async for out in stream]
        assert rest[-1].finish_reason is FinishReason.ABORT
        with pytest.raises(EngineDeadError):
            await collect(engine, make_engine_request("late", [1]))

    asyncio.run(main())


def test_admission_errors_surface_before_the_first_output(tokenizer):
    engine = make_engine(tokenizer, max_waiting=0)

    async def main():
        with pytest.raises(QueueFullError):
            await collect(engine, make_engine_request("r", [1, 2]))

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()


def test_engine_crash_fails_in_flight_requests_and_refuses_new_ones(tokenizer):
    def device_lost(sched, context):  # every step fails: after MAX_FAILED_STEPS in a row the engine stops
        raise RuntimeError("device lost")

    engine = make_engine(tokenizer, device_lost)

    async def main():
        for i in range(MAX_FAILED_STEPS - 1):  # failed steps before: each fails its own request only
            with pytest.raises(RequestFailedError):
                await collect(engine, make_engine_request(f"early{i}", [i + 1], max_tokens=10))
        results = await asyncio.gather(
            *(collect(engine, make_engine_request(f"r{i}", [i + 1], max_tokens=10)) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, EngineDeadError) for r in results)
        assert all("device lost" not in str(r) for r in results)  # the cause goes to the log, not the client
        with pytest.raises(EngineDeadError):
            await collect(engine, make_engine_request("late", [1]))

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    assert not engine.is_alive


def test_a_reader_that_stops_reading_is_cut_after_a_bounded_number_of_deltas(tokenizer):
    core, _ = make_core(tokenizer, lambda sched, context: 5)
    engine = AsyncEngine(ThreadTransport(core), MODEL_INFO, tokenizer, core.stats(), max_pending_deltas=8)
    request = make_engine_request("slow", [1, 2, 3], max_tokens=3_000, ignore_eos=True)

    async def main():
        stream = engine.generate(request)
        first = await anext(stream)  # then the reader stops reading
        for _ in range(2_000):
            await asyncio.sleep(0.005)
            if engine.num_outstanding == 0 and engine.stats.num_running == 0:
                break
        unread = []
        with pytest.raises(SlowReaderError, match="fell 8 deltas behind"):
            async for output in stream:
                unread.append(output)
        return first, unread

    try:
        first, unread = asyncio.run(main())
    finally:
        engine.shutdown()
    assert 7 <= len(unread) <= 8 and not unread[-1].finished  # what was queued (at most 8), then the error
    assert engine.stats.num_running == 0 and engine.stats.kv_cache_usage == 0.0  # aborted in the core
