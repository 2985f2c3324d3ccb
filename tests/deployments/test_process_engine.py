"""The process engine (AsyncEngine over a ProcessTransport): the engine core in its own process,
behind the same client contract as the thread engine — same tokens, admission errors, abort on
close, and a prompt EngineDeadError (never a hang) when the process dies."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Iterator

import pytest

from firebox.config import CacheConfig, DeviceConfig, EngineConfig, ModelConfig, SchedulerConfig
from firebox.engine.client import AsyncEngine
from firebox.engine.process import EngineStartError, launch_process_engine
from firebox.engine.types import EngineDeadError, EngineRequest, FinishReason, PromptTooLongError, SamplingParams
from tests.conftest import wait_until
from tests.deployments.fake_replica import build_fake_core

CONFIG = EngineConfig(
    model=ModelConfig(max_model_len=256),
    cache=CacheConfig(num_blocks=64),
    scheduler=SchedulerConfig(max_num_seqs=8),
    device=DeviceConfig(device="cpu", num_threads=1, attention_backend="torch"),
)


def _request(request_id: str, prompt: list[int], **sampling) -> EngineRequest:
    return EngineRequest(request_id, tuple(prompt), SamplingParams(**sampling), time.monotonic())


async def _collect(engine, request: EngineRequest) -> list:
    return [out async for out in engine.generate(request)]


@pytest.fixture(scope="module")
def engine() -> Iterator[AsyncEngine]:
    """The real default model in an engine process."""
    engine = launch_process_engine(CONFIG).wait()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def fake_engine() -> Iterator[AsyncEngine]:
    """An engine process whose core runs the fake executor (about a millisecond per token)."""
    config = dataclasses.replace(CONFIG, model=ModelConfig(max_model_len=65_536), cache=CacheConfig(num_blocks=4200))
    engine = launch_process_engine(config, build=build_fake_core).wait(description=_fake_description())
    yield engine
    engine.shutdown()


def test_same_greedy_tokens_as_the_thread_engine(engine: AsyncEngine) -> None:
    from firebox.engine.launch import start_engine

    prompts = [engine.tokenizer.encode(text) for text in ("The capital of France is", "1, 2, 3, 4,")]
    requests = [_request(f"g{i}", p, max_tokens=12, temperature=0.0) for i, p in enumerate(prompts)]

    async def run(client) -> list[list[int]]:
        results = await asyncio.gather(*(_collect(client, r) for r in requests))
        return [[t for out in outs for t in out.new_token_ids] for outs in results]

    thread_engine = start_engine(CONFIG)
    try:
        expected = asyncio.run(run(thread_engine))
    finally:
        thread_engine.shutdown()
    assert asyncio.run(run(engine)) == expected
    assert engine.model_info.max_model_len == 256 and engine.model_info.eos_token_ids == (2,)
    assert engine.stats.num_running == 0 and engine.is_alive


def test_closing_the_stream_aborts_the_request_in_the_child(fake_engine: AsyncEngine) -> None:
    async def read_three_then_leave() -> int:
        stream = fake_engine.generate(_request("long", [1, 2, 3, 4], max_tokens=30_000, ignore_eos=True))
        count = 0
        async for _ in stream:
            count += 1
            if count == 3:
                break
        await stream.aclose()  # as the API does when the client disconnects
        return count

    assert asyncio.run(read_three_then_leave()) == 3
    # without the abort the child would be busy for 30 s more
    assert wait_until(lambda: fake_engine.stats.num_running == 0 and fake_engine.stats.kv_cache_usage == 0.0)
    assert fake_engine.num_outstanding == 0


def test_admission_errors_come_back_from_the_child(engine: AsyncEngine) -> None:
    async def main() -> None:
        with pytest.raises(PromptTooLongError) as too_long:
            await _collect(engine, _request("big", [7] * 300, max_tokens=4))
        assert (too_long.value.num_prompt_tokens, too_long.value.max_model_len) == (300, 256)
        aborted = engine.generate(_request("same-id", [1, 2], max_tokens=50, ignore_eos=True))
        await anext(aborted)
        with pytest.raises(ValueError, match="already running"):
            await _collect(engine, _request("same-id", [1, 2], max_tokens=1))
        await engine.abort("same-id")
        outputs = [out async for out in aborted]
        assert outputs[-1].finish_reason is FinishReason.ABORT

    asyncio.run(main())


def test_a_killed_engine_process_fails_its_requests_promptly() -> None:
    engine = launch_process_engine(CONFIG, build=build_fake_core).wait(description=_fake_description())

    async def main() -> None:
        streams = [engine.generate(_request(f"k{i}", [5, 6, 7], max_tokens=10_000, ignore_eos=True)) for i in range(2)]
        for stream in streams:
            await anext(stream)
        os.kill(engine.transport.pid, signal.SIGKILL)
        for stream in streams:
            with pytest.raises(EngineDeadError, match="stopped") as caught:
                await asyncio.wait_for(_drain(stream), timeout=5)  # bounded so a hang fails, not stalls
            assert str(engine.transport.pid) not in str(caught.value)  # the log has it, not the client
        with pytest.raises(EngineDeadError):
            await _collect(engine, _request("late", [1], max_tokens=1))

    try:
        asyncio.run(main())
        assert not engine.is_alive
    finally:
        engine.shutdown()


def test_a_killed_engine_process_is_restarted_by_its_supervisor() -> None:
    from firebox.engine.supervisor import RestartPolicy, SupervisedEngine

    launch = launch_process_engine(CONFIG, build=build_fake_core)
    supervised = SupervisedEngine(launch.wait(description=_fake_description()), launch.restart, RestartPolicy(0.1))
    first = supervised.engine
    try:
        os.kill(first.transport.pid, signal.SIGKILL)
        assert wait_until(lambda: supervised.engine is not first and supervised.is_alive, timeout=60)
        outputs = asyncio.run(_collect(supervised, _request("after", [5, 6], max_tokens=3, ignore_eos=True)))
        assert outputs[-1].finish_reason is FinishReason.LENGTH
    finally:
        supervised.shutdown()
    assert not supervised.engine.transport.process.is_alive()


def test_a_model_that_fails_to_load_raises_the_childs_error(tmp_path) -> None:
    bad = EngineConfig(model=ModelConfig(source=f"dummy:{tmp_path}/missing/config.json", name="accounts/x/models/bad"))
    with pytest.raises(EngineStartError, match="missing/config.json"):
        launch_process_engine(bad).wait(description=_fake_description())  # the real loader, in the child


def test_shutdown_ends_in_flight_requests_and_stops_the_process() -> None:
    engine = launch_process_engine(CONFIG, build=build_fake_core).wait(description=_fake_description())

    async def main() -> list:
        stream = engine.generate(_request("s", [5, 6], max_tokens=10_000, ignore_eos=True))
        await anext(stream)
        await asyncio.to_thread(engine.shutdown)
        return [out async for out in stream]

    outputs = asyncio.run(main())
    assert outputs[-1].finish_reason is FinishReason.ABORT
    assert not engine.is_alive and not engine.transport.process.is_alive()


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def _fake_description():
    from firebox.engine.describe import ModelDescription

    core, info = build_fake_core(CONFIG)
    return ModelDescription(info, core.tokenizer)



ORPHAN = """
import os, signal
from firebox.config import EngineConfig
from firebox.engine.describe import ModelDescription
from firebox.engine.process import launch_process_engine
from tests.deployments.fake_replica import build_fake_core

if __name__ == "__main__":
    core, info = build_fake_core(EngineConfig())
    launch = launch_process_engine(EngineConfig(), build=build_fake_core)
    engine = launch.wait(description=ModelDescription(info, core.tokenizer))
    print(engine.transport.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no atexit: as the OOM killer would
"""


def test_the_engine_process_does_not_outlive_a_killed_parent(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, str(script)], cwd=repo, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    child = int(done.stdout.split()[0])
    assert wait_until(lambda: not Path(f"/proc/{child}").exists(), timeout=10)
