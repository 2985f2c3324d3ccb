"""Greedy choice, temperature and truncation, checked on the distribution of many draws."""

from __future__ import annotations

import pytest
import torch

from firebox.engine.types import SamplingParams
from tests.runner.helpers import draw_frequencies, logits_from_probs, sample_params

NUM_DRAWS = 40_000  # max |empirical - expected| < 0.01 is over 4 standard deviations


def test_greedy_is_exactly_argmax_with_ties_broken_like_torch() -> None:
    logits = torch.randn(64, 300)
    logits[3, [7, 100, 250]] = 50.0  # three-way tie: torch.argmax takes the first
    logits[5, :] = 1.0  # all tied
    logits[9, [299, 4]] = 40.0
    greedy = sample_params(logits, [SamplingParams(temperature=0.0)] * 64)
    assert greedy == logits.argmax(-1).tolist()
    assert greedy[3] == 7 and greedy[5] == 0 and greedy[9] == 4


def test_top_k_1_equals_greedy_even_with_ties() -> None:
    logits = torch.randn(64, 300) * 3
    logits[0, [10, 20]] = 30.0
    top1 = sample_params(logits, [SamplingParams(temperature=1.5, top_k=1, seed=i) for i in range(64)])
    assert top1 == logits.argmax(-1).tolist()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_frequencies_match_softmax_over_temperature(temperature: float) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, -3.0])
    freqs = draw_frequencies(logits, SamplingParams(temperature=temperature), NUM_DRAWS)
    expected = (logits.double() / temperature).softmax(-1)
    assert (freqs - expected).abs().max().item() < 0.01


def test_top_k_samples_only_among_the_k_best_in_proportion() -> None:
    logits = torch.randn(50) * 2
    freqs = draw_frequencies(logits, SamplingParams(top_k=5), NUM_DRAWS)
    best5 = logits.topk(5).indices
    assert set(freqs.nonzero().squeeze(1).tolist()) == set(best5.tolist())
    expected = torch.zeros(50, dtype=torch.float64)
    expected[best5] = logits[best5].double().softmax(-1)
    assert (freqs - expected).abs().max().item() < 0.01


def test_top_p_removes_exactly_the_tail() -> None:
    # probs 0.5, 0.3, 0.15, 0.05 spread over token ids that are not in rank order
    probs = [0.0] * 10
    probs[6], probs[2], probs[9], probs[0] = 0.5, 0.3, 0.15, 0.05
    logits = logits_from_probs([p if p else 1e-12 for p in probs])
    freqs = draw_frequencies(logits, SamplingParams(top_p=0.8), NUM_DRAWS)
    assert set(freqs.nonzero().squeeze(1).tolist()) == {6, 2}
    assert abs(freqs[6].item() - 0.5 / 0.8) < 0.01


def test_min_p_keeps_tokens_above_the_scaled_threshold() -> None:
    probs = [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02]
    logits = logits_from_probs(probs)
    freqs = draw_frequencies(logits, SamplingParams(min_p=0.2), NUM_DRAWS)  # cut below 0.08
    assert set(freqs.nonzero().squeeze(1).tolist()) == {0, 1, 2, 3}
    expected = torch.tensor(probs[:4] + [0.0] * 3, dtype=torch.float64) / 0.9
    assert (freqs - expected).abs().max().item() < 0.01


def test_typical_p_draws_follow_the_typical_set() -> None:
    probs = [0.45, 0.2, 0.15, 0.1, 0.05, 0.03, 0.02]
    logits = logits_from_probs(probs)
    freqs = draw_frequencies(logits, SamplingParams(typical_p=0.5), NUM_DRAWS)
    # entropy 1.53 nats; |surprisal - entropy| ranks tokens 1 (0.08), 2 (0.37), 0 (0.73), 3 (0.77):
    # the mass of the first two is 0.35 < 0.5, so the set ends with token 0
    assert set(freqs.nonzero().squeeze(1).tolist()) == {0, 1, 2}
    expected = torch.tensor(probs[:3] + [0.0] * 4, dtype=torch.float64) / 0.8
    assert (freqs - expected).abs().max().item() < 0.01


def test_temperature_applies_before_truncation() -> None:
    # cumulative mass at T=2: 0.50, 0.75, 0.98 (top_p 0.8 needs three tokens); at T=1: 0.69, 0.86 (two)
    logits = torch.tensor([2.0, 0.6, 0.4, -4.0])
    hot = draw_frequencies(logits, SamplingParams(temperature=2.0, top_p=0.8), 5_000)
    cold = draw_frequencies(logits, SamplingParams(temperature=1.0, top_p=0.8), 5_000)
    assert set(hot.nonzero().squeeze(1).tolist()) == {0, 1, 2}
    assert set(cold.nonzero().squeeze(1).tolist()) == {0, 1}
