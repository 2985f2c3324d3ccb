"""Prompts, arrival offsets and the dispatch loop (on a fake clock: no real waiting, no timing asserts)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from firebox.bench.serve import LoadLevel, default_num_requests, dispatch, requests_needed
from firebox.bench.workload import WORDS, arrival_offsets, file_requests, synthetic_requests


def test_synthetic_prompts_are_reproducible_distinct_and_input_len_words() -> None:
    first = synthetic_requests(5, input_len=16, output_len=9, seed=3)
    assert first == synthetic_requests(5, input_len=16, output_len=9, seed=3)
    assert first != synthetic_requests(5, input_len=16, output_len=9, seed=4)
    assert len({r.prompt for r in first}) == 5
    for request in first:
        words = request.prompt.split(" ")
        assert len(words) == 16 and set(words) <= set(WORDS)
        assert request.max_tokens == 9 and request.messages is None
    with pytest.raises(ValueError):
        synthetic_requests(1, input_len=0, output_len=1, seed=0)


def test_synthetic_prompt_is_about_input_len_tokens() -> None:
    from tests.fakes import chatml_tokenizer  # a byte-level BPE: words are at least one token each

    prompt = synthetic_requests(1, input_len=32, output_len=1, seed=0)[0].prompt
    assert len(chatml_tokenizer().encode(prompt)) >= 32


def test_prompt_file_jsonl_and_text(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    rows = [{"prompt": "one"}, {"messages": [{"role": "user", "content": "two"}], "max_tokens": 5}, "three"]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    requests = file_requests(jsonl, 4, output_len=7)
    assert [r.prompt for r in requests] == ["one", "", "three", "one"]  # cycled
    assert [r.max_tokens for r in requests] == [7, 5, 7, 7]
    assert requests[1].messages == ({"role": "user", "content": "two"},)
    text = tmp_path / "p.txt"
    text.write_text("alpha\n\nbeta\n")
    assert [r.prompt for r in file_requests(text, 3, output_len=2)] == ["alpha", "beta", "alpha"]


def test_prompt_file_errors(tmp_path: Path) -> None:
    empty, bad = tmp_path / "e.txt", tmp_path / "b.jsonl"
    empty.write_text("\n")
    bad.write_text('{"text": "no prompt field"}\n')
    with pytest.raises(ValueError):
        file_requests(empty, 1, 1)
    with pytest.raises(ValueError):
        file_requests(bad, 1, 1)


def test_infinite_rate_sends_everything_at_once() -> None:
    assert arrival_offsets(4, math.inf, seed=0) == [0.0] * 4
    with pytest.raises(ValueError):
        arrival_offsets(4, 0.0, seed=0)


def test_poisson_offsets_are_seeded_ascending_with_mean_gap_one_over_rate() -> None:
    offsets = arrival_offsets(4000, request_rate=5.0, seed=1)
    assert offsets == arrival_offsets(4000, request_rate=5.0, seed=1)
    assert offsets[0] == 0.0
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert min(gaps) > 0
    assert sum(gaps) / len(gaps) == pytest.approx(0.2, rel=0.05)
    # exponential gaps: the standard deviation equals the mean (a fixed interval would give 0)
    mean = sum(gaps) / len(gaps)
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert std == pytest.approx(mean, rel=0.1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """As asyncio.sleep: other tasks run meanwhile, and it wakes at its deadline (or later)."""
        self.sleeps.append(seconds)
        deadline = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, deadline)


def test_dispatch_launches_each_request_at_its_offset() -> None:
    clock = FakeClock()
    launched: list[tuple[int, float]] = []

    async def launch(i: int) -> int:
        launched.append((i, clock()))
        clock.now += 0.05  # launching takes time, which the next wait absorbs
        return i * 10

    results = asyncio.run(dispatch([0.0, 0.0, 0.5, 2.0], launch, clock=clock, sleep=clock.sleep))
    assert results == [0, 10, 20, 30]
    assert [i for i, _ in launched] == [0, 1, 2, 3]
    assert [t for _, t in launched] == pytest.approx([100.0, 100.05, 100.5, 102.0])
    assert clock.sleeps == pytest.approx([0.5, 1.5])


def test_dispatch_does_not_wait_when_behind_schedule() -> None:
    clock = FakeClock()

    async def slow_launch(i: int) -> int:
        clock.now += 1.0
        return i

    asyncio.run(dispatch([0.0, 0.2, 0.4], slow_launch, clock=clock, sleep=clock.sleep))
    assert clock.sleeps == pytest.approx([0.2])  # the first launch overran both later offsets


def test_load_levels() -> None:
    assert [default_num_requests(c) for c in (1, 4, 8, 32)] == [8, 8, 16, 64]
    levels = [LoadLevel(1, 8), LoadLevel(8, 16)]
    assert requests_needed(levels, num_warmup=2) == 26
    with pytest.raises(ValueError):
        LoadLevel(0, 8)
    with pytest.raises(ValueError):
        LoadLevel(1, 8, request_rate=0.0)
