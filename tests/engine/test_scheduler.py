"""Scheduler + KV manager on the CPU with a fake executor (no model, no torch)."""

from __future__ import annotations

import pytest
from engine_fakes import EOS, FakeExecutor, make_request, make_scheduler, run_scheduler, scripted

from firebox.engine.request import RequestStatus
from firebox.engine.types import FinishReason, PromptTooLongError, QueueFullError


def step(scheduler, executor):
    batch = scheduler.schedule()
    return batch, scheduler.update(batch, executor.execute(batch))


def test_new_request_joins_the_running_batch_at_the_next_step():
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4)
    scheduler.add_request(make_request("a", 6, max_tokens=20))
    step(scheduler, executor)  # a's prefill
    step(scheduler, executor)  # a decodes
    scheduler.add_request(make_request("b", [9] * 5, max_tokens=20))
    batch, _ = step(scheduler, executor)
    by_id = {s.request_id: s for s in batch.requests}
    assert set(by_id) == {"a", "b"}
    assert len(by_id["a"].token_ids) == 1 and by_id["a"].start_pos == 7
    assert by_id["b"].token_ids == [9] * 5 and by_id["b"].start_pos == 0 and by_id["b"].sample
    assert batch.num_tokens == 6


def test_chunked_prefill_respects_the_budget_and_decodes_keep_running():
    scheduler = make_scheduler(max_num_batched_tokens=16, num_blocks=128)
    executor = FakeExecutor(128, 4)
    for rid in ("d1", "d2"):
        scheduler.add_request(make_request(rid, [7, 8, 9], priority=1, max_tokens=50))
    step(scheduler, executor)
    # Urgent, so it runs ahead of the decodes: its chunks must still leave them a token each.
    scheduler.add_request(make_request("long", 100, priority=0, max_tokens=2))
    chunks = []
    while scheduler.requests["long"].num_output_tokens == 0:
        batch, _ = step(scheduler, executor)
        assert batch.num_tokens <= 16
        by_id = {s.request_id: s for s in batch.requests}
        assert len(by_id["d1"].token_ids) == len(by_id["d2"].token_ids) == 1  # decodes never stall
        chunks.append(by_id["long"])
    assert [len(c.token_ids) for c in chunks] == [14] * 7 + [2]
    assert [c.start_pos for c in chunks] == [14 * i for i in range(8)]
    assert [c.sample for c in chunks] == [False] * 7 + [True]
    assert sum((c.token_ids for c in chunks), []) == list(range(1, 101))


def test_more_decodes_than_budget_all_make_progress():
    scheduler = make_scheduler(max_num_batched_tokens=2)
    executor = FakeExecutor(64, 4)
    for rid in "abc":
        scheduler.add_request(make_request(rid, 1, max_tokens=5))
    finished = run_scheduler(scheduler, executor, max_steps=100)
    assert {r.num_output_tokens for r in finished.values()} == {5}


def test_waiting_requests_run_by_priority_then_arrival():
    scheduler = make_scheduler(max_num_seqs=1)
    executor = FakeExecutor(64, 4)
    scheduler.add_request(make_request("late-low", 4, priority=1, arrival=0.0, max_tokens=1))
    scheduler.add_request(make_request("second", 4, priority=0, arrival=2.0, max_tokens=1))
    scheduler.add_request(make_request("first", 4, priority=0, arrival=1.0, max_tokens=1))
    scheduler.add_request(make_request("tie", 4, priority=0, arrival=2.0, max_tokens=1))
    order = [step(scheduler, executor)[0].requests[0].request_id for _ in range(4)]
    assert order == ["first", "second", "tie", "late-low"]


def _workload():
    return [make_request(f"r{i}", [10 + i] * (5 + 3 * i), max_tokens=12 + i, ignore_eos=True) for i in range(6)]


def test_preemption_under_a_tiny_pool_gives_the_same_tokens():
    roomy = make_scheduler(num_blocks=256)
    for req in _workload():
        roomy.add_request(req)
    reference = run_scheduler(roomy, FakeExecutor(256, 4))
    assert roomy.num_preemptions == 0

    tight = make_scheduler(num_blocks=12, max_num_batched_tokens=64)
    for req in _workload():
        tight.add_request(req)
    finished = run_scheduler(tight, FakeExecutor(12, 4))
    assert tight.num_preemptions > 0
    assert {rid: r.output_token_ids for rid, r in finished.items()} == {
        rid: r.output_token_ids for rid, r in reference.items()
    }
    assert all(r.finish_reason is FinishReason.LENGTH for r in finished.values())
    assert tight.kv.num_free_blocks == 12


def test_preempted_request_resumes_with_its_tokens_as_prompt():
    scheduler = make_scheduler(num_blocks=4, max_num_batched_tokens=64)
    executor = FakeExecutor(4, 4)
    scheduler.add_request(make_request("old", [1] * 6, max_tokens=20, ignore_eos=True))
    scheduler.add_request(make_request("new", [2] * 6, max_tokens=20, ignore_eos=True))
    batches = [step(scheduler, executor)[0] for _ in range(4)]
    # Prefill (2 blocks each: the pool is full), decodes at 6 and 7, then old needs a block for 8.
    assert [len(b.requests) for b in batches] == [2, 2, 2, 1] and scheduler.num_preemptions == 1
    batch = batches[3]
    new = scheduler.requests["new"]
    assert new.status is RequestStatus.PREEMPTED and new.num_computed_tokens == 0 and new.block_ids == []
    assert [s.request_id for s in batch.requests] == ["old"]
    assert "new" in batch.freed_request_ids
    kept = list(new.output_token_ids)
    assert len(kept) == 3
    finished = run_scheduler(scheduler, executor)
    assert finished["new"].output_token_ids[:3] == kept
    new_chunks = [s for b in executor.batches for s in b.requests if s.request_id == "new"]
    resumed = next(s for s in new_chunks if s.start_pos == 0 and s.seed_offset)
    assert resumed.token_ids == [2] * 6 + kept and resumed.seed_offset == 3 and resumed.sample


def test_prefix_cache_hit_for_a_repeated_prompt():
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4)
    scheduler.add_request(make_request("a", 18, max_tokens=4, ignore_eos=True))
    first = run_scheduler(scheduler, executor)["a"]
    scheduler.add_request(make_request("b", 18, max_tokens=4, ignore_eos=True))
    batch = scheduler.schedule()
    assert batch.requests[0].start_pos == 16 and batch.requests[0].token_ids == [17, 18]
    scheduler.update(batch, executor.execute(batch))
    second = run_scheduler(scheduler, executor)["b"]
    assert first.num_cached_tokens == 0 and second.num_cached_tokens == 16
    assert second.output_token_ids == first.output_token_ids  # the cached KV is the right KV
    assert (scheduler.kv.prefix_stats.queries, scheduler.kv.prefix_stats.hits) == (36, 16)


def test_prefix_match_never_covers_the_whole_prompt():
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4)
    scheduler.add_request(make_request("a", 16, max_tokens=1))
    run_scheduler(scheduler, executor)
    scheduler.add_request(make_request("b", 16, max_tokens=1))
    batch = scheduler.schedule()
    assert batch.requests[0].start_pos == 12 and batch.requests[0].sample


def test_siblings_share_prompt_blocks_with_right_refcounts():
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4)
    for i in range(3):
        scheduler.add_request(make_request(f"s{i}", 14, max_tokens=30, ignore_eos=True))
    batch, _ = step(scheduler, executor)
    s0, s1, s2 = (scheduler.requests[f"s{i}"] for i in range(3))
    assert [s.start_pos for s in batch.requests] == [0, 12, 12]
    assert s1.num_cached_tokens == s2.num_cached_tokens == 12
    assert s0.block_ids[:3] == s1.block_ids[:3] == s2.block_ids[:3]
    assert len({s0.block_ids[3], s1.block_ids[3], s2.block_ids[3]}) == 3
    pool = scheduler.kv.pool
    assert [pool.blocks[b].ref_count for b in s0.block_ids] == [3, 3, 3, 1]
    assert scheduler.kv.num_free_blocks == 64 - 6
    finished = run_scheduler(scheduler, executor)
    assert len({tuple(r.output_token_ids) for r in finished.values()}) == 1  # same prompt, same fake model
    assert all(b.ref_count == 0 for b in pool.blocks) and scheduler.kv.num_free_blocks == 64


def test_shared_system_prompt_reuses_its_blocks():
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4)
    system = [7] * 10
    scheduler.add_request(make_request("a", [*system, 1, 2, 3], max_tokens=2))
    run_scheduler(scheduler, executor)
    scheduler.add_request(make_request("b", [*system, 4, 5], max_tokens=2))
    scheduler.add_request(make_request("salted", [*system, 4, 5], cache_salt="tenant-2", max_tokens=2))
    run_scheduler(scheduler, executor)
    assert scheduler.kv.prefix_stats.hits == 8  # b: two full system blocks; the salted one: none


def test_cached_free_blocks_are_evicted_lru_when_the_pool_needs_them():
    scheduler = make_scheduler(num_blocks=8)
    executor = FakeExecutor(8, 4)
    scheduler.add_request(make_request("a", [5] * 12, max_tokens=1))
    run_scheduler(scheduler, executor)
    scheduler.add_request(make_request("big", [6] * 30, max_tokens=1))  # needs all 8 blocks
    run_scheduler(scheduler, executor)
    scheduler.add_request(make_request("a2", [5] * 12, max_tokens=1))
    assert run_scheduler(scheduler, executor)["a2"].num_cached_tokens == 0


def test_every_block_is_free_after_a_burst_of_aborts():
    scheduler = make_scheduler(num_blocks=16, max_num_batched_tokens=16)
    executor = FakeExecutor(16, 4)
    for i in range(10):
        scheduler.add_request(make_request(f"r{i}", [i + 1] * 9, max_tokens=40, ignore_eos=True))
    for _ in range(5):
        step(scheduler, executor)
    assert scheduler.num_running > 0 and scheduler.num_waiting > 0
    aborted = scheduler.abort([f"r{i}" for i in range(10)] + ["unknown"])
    assert len(aborted) == 10 and all(r.finish_reason is FinishReason.ABORT for r in aborted)
    assert not scheduler.has_unfinished() and scheduler.num_running == scheduler.num_waiting == 0
    assert scheduler.kv.num_free_blocks == 16 and scheduler.kv.usage == 0.0
    scheduler.add_request(make_request("after", 9, max_tokens=3))
    batch = scheduler.schedule()
    assert batch.freed_request_ids == frozenset(f"r{i}" for i in range(10))


def test_prompt_larger_than_the_pool_is_rejected_at_add():
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    with pytest.raises(PromptTooLongError):
        scheduler.add_request(make_request("huge", 17))
    scheduler.add_request(make_request("fits", 16, max_tokens=5))
    finished = run_scheduler(scheduler, FakeExecutor(4, 4))
    assert finished["fits"].finish_reason is FinishReason.LENGTH  # the pool ends it, no hang
    assert finished["fits"].num_output_tokens == 1


def test_queue_full_is_refused():
    scheduler = make_scheduler(max_waiting=2)
    scheduler.add_request(make_request("a", 3))
    scheduler.add_request(make_request("b", 3))
    with pytest.raises(QueueFullError):
        scheduler.add_request(make_request("c", 3))
    duplicate = make_scheduler()
    duplicate.add_request(make_request("a", 3))
    with pytest.raises(ValueError):
        duplicate.add_request(make_request("a", 3))


@pytest.mark.parametrize(
    ("sampling", "reason", "stop_reason", "num_tokens"),
    [
        ({}, FinishReason.STOP, None, 3),  # EOS
        ({"ignore_eos": True}, FinishReason.LENGTH, None, 6),
        ({"stop_token_ids": (42,)}, FinishReason.STOP, 42, 2),
        ({"min_tokens": 3}, FinishReason.STOP, None, 5),  # the EOS at 3 is too early, the one at 5 counts
        ({"stop_token_ids": (42,), "min_tokens": 2}, FinishReason.STOP, None, 3),
    ],
)
def test_finish_rules(sampling, reason, stop_reason, num_tokens):
    scheduler = make_scheduler()
    executor = FakeExecutor(64, 4, scripted({"r": [5, 42, EOS, 6, EOS, 7]}))
    scheduler.add_request(make_request("r", 3, **{"max_tokens": 6, **sampling}))
    finished = run_scheduler(scheduler, executor)["r"]
    outcome = (finished.finish_reason, finished.stop_reason, finished.num_output_tokens)
    assert outcome == (reason, stop_reason, num_tokens)


def test_max_model_len_ends_a_request():
    scheduler = make_scheduler(max_model_len=10)
    scheduler.add_request(make_request("r", 7, max_tokens=100, ignore_eos=True))
    finished = run_scheduler(scheduler, FakeExecutor(64, 4))["r"]
    assert finished.finish_reason is FinishReason.LENGTH and finished.num_tokens == 10


def test_max_tokens_zero_prefills_without_sampling():
    scheduler = make_scheduler(max_num_batched_tokens=8)
    executor = FakeExecutor(64, 4)
    scheduler.add_request(make_request("score", 20, max_tokens=0, prompt_logprobs=0))
    finished = run_scheduler(scheduler, executor)["score"]
    assert finished.finish_reason is FinishReason.LENGTH and finished.output_token_ids == []
    assert not any(s.sample for b in executor.batches for s in b.requests)
    assert [lp.token_id for lp in finished.prompt_logprobs] == list(range(2, 21))


def test_one_tenants_flood_does_not_hold_back_another_tenants_request():
    scheduler = make_scheduler(max_num_seqs=4, num_blocks=256)
    executor = FakeExecutor(256, 4)
    for i in range(40):  # tenant a floods first
        req = make_request(f"a{i}", 4, arrival=0.0, max_tokens=3)
        req.tenant = "a"
        scheduler.add_request(req)
    late = make_request("b0", 4, arrival=1.0, max_tokens=3)
    late.tenant = "b"
    scheduler.add_request(late)
    admitted: list[str] = []
    while "b0" not in admitted:
        batch, _ = step(scheduler, executor)
        admitted += [s.request_id for s in batch.requests if s.start_pos == 0]
    # b's one request goes in at the first free slot, ahead of the 36 of a's still waiting
    assert admitted.index("b0") <= 4
    assert sum(1 for r in scheduler.waiting if r.tenant == "a") >= 30


def test_without_tenants_admission_stays_first_come_first_served():
    scheduler = make_scheduler(max_num_seqs=2, num_blocks=256)
    executor = FakeExecutor(256, 4)
    for i in range(6):
        scheduler.add_request(make_request(f"r{i}", 4, arrival=float(i), max_tokens=2))
    admitted: list[str] = []
    while scheduler.has_unfinished():
        batch, _ = step(scheduler, executor)
        admitted += [s.request_id for s in batch.requests if s.start_pos == 0]
    assert admitted == [f"r{i}" for i in range(6)]
