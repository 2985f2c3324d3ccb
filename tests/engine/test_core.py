"""EngineCore.step(): schedule -> execute (fake) -> update -> detokenize -> outputs."""

from __future__ import annotations

import pytest
from engine_fakes import EOS, make_core, make_engine_request, prompt_logprob, scripted

from firebox.engine.types import FinishReason, PromptTooLongError, QueueFullError


def run(core, max_steps=1000):
    outputs: dict[str, list] = {}
    for _ in range(max_steps):
        if not core.has_unfinished():
            return outputs
        for out in core.step():
            outputs.setdefault(out.request_id, []).append(out)
    raise AssertionError("core did not finish")


def test_stream_of_deltas_with_text_logprobs_and_timings(tokenizer):
    text = "Fire 🔥 and ice"
    script = tokenizer.encode(text)
    core, _ = make_core(tokenizer, scripted({"r": [*script, EOS]}))
    core.add_request(make_engine_request("r", [5, 6, 7], max_tokens=50, logprobs=1, arrival=1.0))
    outs = run(core)["r"]
    assert [t for o in outs for t in o.new_token_ids] == [*script, EOS]
    assert "".join(o.text_delta for o in outs) == text  # EOS is no text
    assert [o.finish_reason for o in outs] == [None] * len(script) + [FinishReason.STOP]
    assert outs[-1].stop_reason is None
    assert all(len(o.logprobs) == 1 and o.logprobs[0].token_id == o.new_token_ids[0] for o in outs)
    last = outs[-1].timings
    assert last.arrival == 1.0 and last.arrival <= last.scheduled <= last.first_token <= last.finished
    assert outs[0].timings.finished is None
    assert all(o.num_prompt_tokens == 3 and o.prompt_logprobs is None for o in outs)


def test_stop_string_finishes_the_request_in_the_same_step(tokenizer):
    script = tokenizer.encode("hello hello world world")
    core, executor = make_core(tokenizer, scripted({"r": script}))
    core.add_request(make_engine_request("r", [5], max_tokens=50, stop=("o w",)))
    outs = run(core)["r"]
    assert "".join(o.text_delta for o in outs) == "hello hell"
    assert (outs[-1].finish_reason, outs[-1].stop_reason) == (FinishReason.STOP, "o w")
    num_sampled = sum(s.sample for b in executor.batches for s in b.requests)
    assert num_sampled == len(outs) < len(script)
    assert core.scheduler.kv.num_free_blocks == 64 and "r" not in core.scheduler.requests


def test_stop_token_text_is_cut_unless_asked(tokenizer):
    script = tokenizer.encode("hello world")
    for include, expected in ((False, "hello"), (True, "hello world")):
        core, _ = make_core(tokenizer, scripted({"r": script}))
        core.add_request(
            make_engine_request(
                "r", [5], max_tokens=9, stop_token_ids=(script[-1],), include_stop_str_in_output=include
            )
        )
        outs = run(core)["r"]
        assert "".join(o.text_delta for o in outs) == expected and outs[-1].stop_reason == script[-1]


def test_prompt_logprobs_accumulate_across_chunks_into_the_first_delta(tokenizer):
    core, _ = make_core(tokenizer, max_num_batched_tokens=8)
    prompt = list(range(30, 50))
    core.add_request(make_engine_request("r", prompt, max_tokens=3, prompt_logprobs=1))
    outs = run(core)["r"]
    first = outs[0].prompt_logprobs
    assert first[0] is None
    assert [(lp.token_id, lp.logprob) for lp in first[1:]] == [(prompt[p], prompt_logprob(p)) for p in range(1, 20)]
    assert all(o.prompt_logprobs is None for o in outs[1:])
    assert all(o.logprobs is None for o in outs)


def test_max_tokens_zero_scores_the_prompt(tokenizer):
    core, executor = make_core(tokenizer)
    core.add_request(make_engine_request("echo", [8, 9, 10, 11], max_tokens=0, prompt_logprobs=0))
    (out,) = run(core)["echo"]
    assert (out.finish_reason, out.new_token_ids, out.text_delta) == (FinishReason.LENGTH, [], "")
    assert [lp and lp.token_id for lp in out.prompt_logprobs] == [None, 9, 10, 11]
    assert not any(s.sample for b in executor.batches for s in b.requests)


def test_cached_tokens_are_reported(tokenizer):
    core, _ = make_core(tokenizer)
    prompt = list(range(40, 58))
    core.add_request(make_engine_request("a", prompt, max_tokens=2))
    first = run(core)["a"]
    core.add_request(make_engine_request("b", prompt, max_tokens=2))
    second = run(core)["b"]
    assert first[-1].num_cached_tokens == 0 and second[-1].num_cached_tokens == 16
    stats = core.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (36, 16)
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)


def test_admission_errors(tokenizer):
    core, _ = make_core(tokenizer, max_model_len=10, max_waiting=1)
    with pytest.raises(PromptTooLongError):
        core.add_request(make_engine_request("long", range(10)))
    core.add_request(make_engine_request("ok", range(9)))
    with pytest.raises(QueueFullError):
        core.add_request(make_engine_request("more", range(3)))
    small_pool, _ = make_core(tokenizer, num_blocks=2, block_size=4)
    with pytest.raises(PromptTooLongError):
        small_pool.add_request(make_engine_request("big", range(9)))


def test_abort_emits_a_final_delta_and_frees_blocks(tokenizer):
    core, _ = make_core(tokenizer)
    core.add_request(make_engine_request("r", range(1, 10), max_tokens=100))
    core.step()
    assert core.stats().num_running == 1 and core.stats().kv_cache_usage > 0
    (out,) = core.abort(["r", "gone"])
    assert out.finish_reason is FinishReason.ABORT and out.timings.finished is not None
    assert not core.has_unfinished() and core.stats().kv_cache_usage == 0.0
