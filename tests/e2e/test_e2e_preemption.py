"""Preemption by recompute with the real model: a KV pool far too small for the batch must give
exactly the texts that a roomy pool gives, and hand every block back."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import GREEDY, PROMPTS, offline_llm

pytestmark = pytest.mark.slow

NUM_TINY_BLOCKS = 8  # 128 tokens of KV for 8 requests that need about 190


def test_a_tiny_kv_cache_preempts_without_changing_results(default_gguf, greedy_alone) -> None:
    tiny = offline_llm(num_kv_blocks=NUM_TINY_BLOCKS, max_num_seqs=8)
    kv = tiny.core.scheduler.kv
    assert kv.num_blocks == NUM_TINY_BLOCKS
    results = tiny.generate(list(PROMPTS), GREEDY)
    needed = sum(kv.num_blocks_for(len(r.prompt_token_ids) + len(r.outputs[0].token_ids)) for r in results)
    assert needed > NUM_TINY_BLOCKS  # the batch cannot fit at once
    assert [r.outputs[0].token_ids for r in results] == [greedy_alone[p].token_ids for p in PROMPTS]
    assert [r.outputs[0].text for r in results] == [greedy_alone[p].text for p in PROMPTS]
    stats = tiny.core.stats()
    assert stats.num_preemptions > 0
    assert (stats.num_running, stats.num_waiting, stats.kv_cache_usage) == (0, 0, 0.0)
    assert kv.num_free_blocks == NUM_TINY_BLOCKS
