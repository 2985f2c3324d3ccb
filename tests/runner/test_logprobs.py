"""Logprobs come from the raw logits: the chosen token's and the N best, per row."""

from __future__ import annotations

import math

import pytest
import torch

from firebox.engine.runner import logprobs as logprobs_module
from firebox.engine.runner.logprobs import compute_prompt_logprobs
from firebox.engine.types import SamplingParams
from tests.runner.helpers import make_request, sample


def test_chosen_logprob_and_top_n_come_from_raw_logits() -> None:
    logits = torch.randn(4, 100) * 3
    requests = [
        make_request(SamplingParams(temperature=2.0, logprobs=3, logit_bias=((50, 5.0),))),
        make_request(SamplingParams(temperature=0.0, logprobs=0)),
        make_request(SamplingParams(top_k=10)),  # did not ask
        make_request(SamplingParams(temperature=0.0, logprobs=5, repetition_penalty=2.0)),
    ]
    out = sample(logits, requests)
    token_ids, entries = out.to_lists()
    assert token_ids == out.sampled_token_ids.tolist()
    raw = logits.double().log_softmax(-1)
    assert entries[2] is None
    for row, num_top in [(0, 3), (1, 0), (3, 5)]:
        entry = entries[row]
        assert entry.token_id == token_ids[row]
        assert entry.logprob == pytest.approx(raw[row, token_ids[row]].item(), abs=1e-5)
        best = raw[row].topk(num_top)
        assert [tok for tok, _ in entry.top] == best.indices.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_no_logprobs_asked_gives_none() -> None:
    out = sample(torch.randn(2, 10), [make_request(SamplingParams())] * 2)
    assert out.logprobs is None and out.to_lists()[1] is None


def test_chosen_only_when_every_row_asks_for_zero_alternatives() -> None:
    logits = torch.randn(2, 30)
    params = SamplingParams(temperature=0.0, logprobs=0)
    _, entries = sample(logits, [make_request(params)] * 2).to_lists()
    assert [e.top for e in entries] == [[], []]
    assert entries[0].logprob == pytest.approx(logits[0].log_softmax(-1).max().item(), abs=1e-6)
    assert compute_prompt_logprobs(logits, torch.tensor([3, 4]), num_top=0)[1].top == []


def test_top_n_larger_than_vocab_is_clamped() -> None:
    logits = torch.randn(1, 4)
    _, entries = sample(logits, [make_request(SamplingParams(logprobs=20))]).to_lists()
    assert len(entries[0].top) == 4


def test_prompt_logprobs_on_a_hand_example() -> None:
    # row 0: probs [0.25, 0.75, 0]; row 1: probs [0.5, 0.25, 0.25]
    logits = torch.tensor([[0.0, math.log(3.0), float("-inf")], [math.log(2.0), 0.0, 0.0]])
    entries = compute_prompt_logprobs(logits, torch.tensor([0, 2]), num_top=1)
    assert [e.token_id for e in entries] == [0, 2]
    assert [e.logprob for e in entries] == pytest.approx([math.log(0.25), math.log(0.25)])
    assert entries[0].top[0][0] == 1 and entries[0].top[0][1] == pytest.approx(math.log(0.75))
    assert entries[1].top[0][0] == 0 and entries[1].top[0][1] == pytest.approx(math.log(0.5))


def test_prompt_logprobs_over_many_chunks_match_log_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logprobs_module, "PROMPT_CHUNK_ROWS", 7)
    logits = torch.randn(30, 50)
    targets = torch.randint(0, 50, (30,))
    entries = compute_prompt_logprobs(logits, targets, num_top=2)
    expected = logits.log_softmax(-1)
    assert len(entries) == 30
    for i, entry in enumerate(entries):
        assert entry.token_id == targets[i].item()
        assert entry.logprob == pytest.approx(expected[i, targets[i]].item(), abs=1e-6)
        assert [tok for tok, _ in entry.top] == expected[i].topk(2).indices.tolist()
    assert compute_prompt_logprobs(logits[:0], targets[:0], num_top=2) == []
