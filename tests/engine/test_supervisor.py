"""SupervisedEngine: a failed engine is started again with backoff, within a restart budget;
requests that arrive meanwhile wait a bounded time or get EngineUnavailableError (a 503 with
Retry-After) whose message names no process."""

from __future__ import annotations

import asyncio
import threading

import pytest
from engine_fakes import context_hash_token, make_core, make_engine_request

from firebox.engine.launch import run_on_thread
from firebox.engine.supervisor import RestartPolicy, SupervisedEngine
from firebox.engine.types import EngineDeadError, EngineUnavailableError, FinishReason, ModelInfo
from tests.conftest import wait_until

MODEL_INFO = ModelInfo("accounts/fireworks/models/m", "fake", 4096, 320, (0,))
FAST = RestartPolicy(backoff_s=0.01, max_backoff_s=0.05, max_restarts=3, window_s=60.0, wait_s=5.0)


class Engines:
    """Builds thread engines over the fake core; counts the builds; can be made to fail or wait."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.built: list = []
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.flowing = threading.Event()  # cleared: tokens after a request's first wait for it
        self.flowing.set()

    def _next_token(self, sched, context) -> int:
        if sched.seed_offset > 0:
            self.flowing.wait(10)
        return context_hash_token(sched, context)

    def __call__(self):
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("the model did not load")
        core, _ = make_core(self.tokenizer, next_token=self._next_token)
        engine = run_on_thread(core, MODEL_INFO, self.tokenizer)
        self.built.append(engine)
        return engine


def kill(supervised: SupervisedEngine) -> None:
    """What the process transport reports when the engine process is killed."""
    supervised.engine.die("the engine process 4242 exited (exit code -9)", is_failure=True)


async def collect(engine, request_id: str) -> list:
    return [out async for out in engine.generate(make_engine_request(request_id, [5, 6], max_tokens=3))]


@pytest.fixture
def engines(tokenizer):
    engines = Engines(tokenizer)
    yield engines
    for engine in engines.built:
        engine.shutdown()


def test_a_failed_engine_is_restarted_and_serves_again(engines):
    supervised = SupervisedEngine(engines(), engines, FAST)
    first = supervised.engine
    kill(supervised)
    assert wait_until(lambda: supervised.is_alive, timeout=10)
    assert supervised.engine is not first and supervised.num_restarts == 1
    assert asyncio.run(collect(supervised, "after"))[-1].finish_reason is FinishReason.LENGTH


def test_in_flight_streams_end_with_an_error_that_names_no_process(engines):
    supervised = SupervisedEngine(engines(), engines, FAST)
    engines.gate.clear()  # the restart waits, so the stream sees the engine down
    engines.flowing.clear()  # the request cannot finish (or outrun its reader) before the kill

    async def main():
        stream = supervised.generate(make_engine_request("long", [5, 6], max_tokens=100_000, ignore_eos=True))
        await anext(stream)
        kill(supervised)
        engines.flowing.set()
        with pytest.raises(EngineDeadError) as caught:
            async for _ in stream:
                pass
        return str(caught.value)

    message = asyncio.run(main())
    engines.gate.set()
    assert "4242" not in message and "exit code" not in message and MODEL_INFO.name in message


def test_a_request_that_arrives_while_down_waits_for_the_restart(engines):
    supervised = SupervisedEngine(engines(), engines, FAST)
    engines.gate.clear()
    kill(supervised)

    async def main():
        waiting = asyncio.create_task(collect(supervised, "waits"))
        await asyncio.sleep(0.2)
        assert not waiting.done() and not supervised.is_alive
        engines.gate.set()
        return await waiting

    assert asyncio.run(main())[-1].finish_reason is FinishReason.LENGTH


def test_a_request_waits_a_bounded_time_then_gets_a_503_with_retry_after(engines):
    policy = RestartPolicy(backoff_s=0.01, max_restarts=3, wait_s=0.2)
    supervised = SupervisedEngine(engines(), engines, policy)
    engines.gate.clear()
    kill(supervised)
    with pytest.raises(EngineUnavailableError, match="restarting") as caught:
        asyncio.run(collect(supervised, "late"))
    engines.gate.set()
    assert caught.value.retry_after_s >= 1


def test_after_the_restart_budget_the_model_stays_down(engines):
    supervised = SupervisedEngine(engines(), engines, FAST)
    engines.fail = True
    kill(supervised)
    assert wait_until(lambda: supervised.num_restarts == FAST.max_restarts and supervised._has_given_up, timeout=10)
    with pytest.raises(EngineUnavailableError, match="stopped") as caught:
        asyncio.run(collect(supervised, "refused"))  # at once: no wait once given up
    assert caught.value.retry_after_s == 60 and not supervised.is_alive


def test_shutdown_is_not_a_failure(engines):
    supervised = SupervisedEngine(engines(), engines, FAST)
    supervised.shutdown()
    assert not wait_until(lambda: len(engines.built) > 1, timeout=0.3)
    with pytest.raises(EngineUnavailableError):
        asyncio.run(collect(supervised, "after shutdown"))
