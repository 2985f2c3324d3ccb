"""An exception inside an engine step fails the requests it can be pinned on and the engine goes
on; only a step that keeps failing (a broken engine, not a bad request) stops it."""

from __future__ import annotations

import asyncio

import pytest
from engine_fakes import context_hash_token, make_core, make_engine_request

from firebox.engine.core import MAX_FAILED_STEPS
from firebox.engine.launch import run_on_thread
from firebox.engine.types import EngineDeadError, FinishReason, ModelInfo, RequestFailedError


class BrokenDetokenizer:
    def update(self, token_ids, num_output_tokens):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a bad byte")


def failing_for(bad_ids: set[str]):
    def next_token(sched, context):
        if sched.request_id in bad_ids:
            raise RuntimeError("a kernel failed on this request")
        return context_hash_token(sched, context)

    return next_token


def run(core, max_steps=200):
    outputs: dict[str, list] = {}
    failures: list[str] = []
    for _ in range(max_steps):
        if not core.has_unfinished():
            return outputs, failures
        for out in core.step():
            outputs.setdefault(out.request_id, []).append(out)
        failures += core.take_failures()
    raise AssertionError("core did not finish")


def test_a_failing_detokenizer_fails_only_its_request(tokenizer):
    core, _ = make_core(tokenizer)
    for request_id in ("good", "bad"):
        core.add_request(make_engine_request(request_id, [5, 6, 7], max_tokens=4))
    core.scheduler.requests["bad"].detokenizer = BrokenDetokenizer()
    outputs, failures = run(core)
    assert failures == ["bad"] and "bad" not in outputs
    assert outputs["good"][-1].finish_reason is FinishReason.LENGTH
    assert core.scheduler.kv.usage == 0.0  # the failed request's blocks are freed


def test_a_failing_forward_pass_fails_its_batch_and_the_engine_goes_on(tokenizer):
    core, _ = make_core(tokenizer, failing_for({"bad"}))
    core.add_request(make_engine_request("bad", [5, 6, 7], max_tokens=4))
    assert run(core) == ({}, ["bad"])
    core.add_request(make_engine_request("next", [5, 6, 7], max_tokens=4))
    outputs, failures = run(core)
    assert failures == [] and outputs["next"][-1].finish_reason is FinishReason.LENGTH


def test_steps_that_keep_failing_stop_the_engine(tokenizer):
    core, _ = make_core(tokenizer, failing_for({f"r{i}" for i in range(MAX_FAILED_STEPS)}))
    for i in range(MAX_FAILED_STEPS - 1):
        core.add_request(make_engine_request(f"r{i}", [5, 6], max_tokens=4))
        assert run(core) == ({}, [f"r{i}"])
    core.add_request(make_engine_request(f"r{MAX_FAILED_STEPS - 1}", [5, 6], max_tokens=4))
    with pytest.raises(RuntimeError, match="kernel failed"):
        core.step()


def test_through_the_client_the_failed_request_gets_an_error_and_others_finish(tokenizer, monkeypatch):
    from firebox.engine import core as core_module

    real = core_module.IncrementalDetokenizer

    def detokenizer(tok, sampling, prompt_token_ids):  # prompt [8, 9]: fails at its first token
        return BrokenDetokenizer() if prompt_token_ids == (8, 9) else real(tok, sampling, prompt_token_ids)

    monkeypatch.setattr(core_module, "IncrementalDetokenizer", detokenizer)
    core, _ = make_core(tokenizer)
    engine = run_on_thread(core, ModelInfo("m", "fake", 4096, 320, (0,)), tokenizer)

    async def collect(request):
        return [out async for out in engine.generate(request)]

    async def main():
        good = make_engine_request("good", [5, 6, 7], max_tokens=40, ignore_eos=True)
        bad = make_engine_request("bad", [8, 9], max_tokens=40, ignore_eos=True)
        results = await asyncio.gather(collect(good), collect(bad), return_exceptions=True)
        assert results[0][-1].finish_reason is FinishReason.LENGTH
        assert isinstance(results[1], RequestFailedError)
        assert engine.is_alive

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    with pytest.raises(EngineDeadError):
        asyncio.run(collect(make_engine_request("late", [1])))
