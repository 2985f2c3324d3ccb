"""Truncation against transformers' warpers on the same logits: same kept tokens, same probabilities."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from firebox.engine.runner.mass_cut import NUM_CANDIDATES
from firebox.engine.runner.sampler import truncated_weights
from firebox.engine.types import SamplingParams
from tests.runner.helpers import batch_of, logits_from_probs


def our_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    batch = batch_of([params] * len(logits), logits.shape[1])
    weights = truncated_weights(logits, batch.random).double()
    return weights / weights.sum(-1, keepdim=True)


def hf_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    warpers = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)])
    if params.top_k:
        warpers.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    if params.min_p:
        warpers.append(MinPLogitsWarper(params.min_p))
    if params.typical_p < 1:
        warpers.append(TypicalLogitsWarper(params.typical_p))
    return warpers(None, logits.clone()).double().softmax(-1)


def assert_same_distribution(logits: torch.Tensor, params: SamplingParams) -> None:
    """Same kept tokens, except at most one per row at the cut whose mass is within float32
    rounding of the cumulative sums (p close to 1 over thousands of tokens); same probabilities."""
    ours, theirs = our_probs(logits, params), hf_probs(logits, params)
    differ = (ours > 0) != (theirs > 0)
    assert differ.sum(-1).max().item() <= 1
    assert (ours[differ].sum() + theirs[differ].sum()).item() < 1e-5
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scale", [8.0, 2.0, 0.5, 0.05])  # from a narrow nucleus to an almost flat one
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_top_p_matches_transformers(scale: float, top_p: float) -> None:
    logits = torch.randn(6, 5000) * scale
    assert_same_distribution(logits, SamplingParams(top_p=top_p))


def test_top_p_reached_exactly_despite_float_rounding() -> None:
    # in float32 the best token's mass comes out just under 0.6: the nucleus must still end there
    logits = logits_from_probs([0.6, 0.05] + [0.025] * 14).unsqueeze(0)
    assert (our_probs(logits, SamplingParams(top_p=0.6)) > 0).sum().item() == 1


def test_top_p_resolves_narrow_rows_by_candidates_and_wide_ones_by_histogram() -> None:
    logits = torch.stack([torch.randn(5000) * 8, torch.randn(5000) * 3, torch.randn(5000) * 0.05])
    ours = our_probs(logits, SamplingParams(top_p=0.9))
    kept = (ours > 0).sum(-1).tolist()
    assert kept[0] <= NUM_CANDIDATES < kept[1] < kept[2]
    assert_same_distribution(logits, SamplingParams(top_p=0.9))


def test_top_p_on_wide_rows_with_top_k_banned_tokens_and_ties() -> None:
    logits = torch.randn(4, 6000) * 0.5
    logits[0, :100] = float("-inf")  # banned (min_tokens) tokens in a histogram row
    logits[1] = 0.25  # every logit tied: one bin holds the whole row
    logits[2, 3000:] = logits[2, :3000]  # each value twice
    for params in (SamplingParams(top_p=0.95), SamplingParams(top_p=0.6, top_k=3000, temperature=0.5)):
        assert_same_distribution(logits[[0, 2, 3]], params)
        assert (our_probs(logits[1:2], params) > 0).all()  # ties at the cut are all kept


@pytest.mark.parametrize("top_k", [2, 40, 4999, 5000, 9000])  # top_k 1 is greedy: test_distributions
def test_top_k_matches_transformers(top_k: int) -> None:
    logits = torch.randn(4, 5000)
    assert_same_distribution(logits, SamplingParams(top_k=top_k, temperature=0.7))


def test_per_row_top_k_in_one_batch_matches_transformers_row_by_row() -> None:
    logits = torch.randn(4, 500)
    params = [SamplingParams(top_k=k) for k in (2, 40, 0, 7)]
    batch = batch_of(params, 500)
    weights = truncated_weights(logits, batch.random).double()
    ours = weights / weights.sum(-1, keepdim=True)
    for row, row_params in enumerate(params):
        torch.testing.assert_close(ours[row : row + 1], hf_probs(logits[row : row + 1], row_params))


def test_top_p_measures_mass_after_top_k_renormalizes() -> None:
    # top_k 3 leaves [0.44, 0.33, 0.22]: top_p 0.75 then keeps two tokens (without the
    # renormalization the first two would hold only 0.7 and a third would be kept)
    logits = logits_from_probs([0.4, 0.3, 0.2, 0.1]).unsqueeze(0)
    params = SamplingParams(top_k=3, top_p=0.75)
    assert (our_probs(logits, params) > 0).tolist() == [[True, True, False, False]]
    assert_same_distribution(logits, params)


@pytest.mark.parametrize("min_p", [0.01, 0.1, 0.5, 1.0])
def test_min_p_matches_transformers(min_p: float) -> None:
    logits = torch.randn(4, 5000) * 2
    assert_same_distribution(logits, SamplingParams(min_p=min_p))


@pytest.mark.parametrize("typical_p", [0.2, 0.5, 0.9, 0.999])
def test_typical_p_matches_transformers_typical_warper(typical_p: float) -> None:
    logits = torch.randn(4, 5000) * 3
    assert_same_distribution(logits, SamplingParams(typical_p=typical_p))


def test_whole_chain_matches_transformers_in_its_order() -> None:
    logits = torch.randn(8, 3000) * 3
    params = SamplingParams(temperature=0.8, top_k=200, top_p=0.9, min_p=0.02, typical_p=0.9)
    assert_same_distribution(logits, params)


def test_tied_logits_at_the_cut_are_all_kept() -> None:
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, -1.0]])
    assert (our_probs(logits, SamplingParams(top_k=2)) > 0).tolist() == [[True, True, True, True, False]]


def test_rows_that_do_not_ask_are_left_untouched_by_a_stage_others_need() -> None:
    logits = torch.randn(4, 2000) * 0.1  # flat: any stray cut would show
    mixed = [SamplingParams(top_p=0.5, top_k=10, typical_p=0.3, min_p=0.9), SamplingParams()] * 2
    batch = batch_of(mixed, 2000)
    weights = truncated_weights(logits, batch.random)
    plain = (logits - logits.amax(-1, keepdim=True)).exp()
    assert torch.equal(weights[1], plain[1]) and torch.equal(weights[3], plain[3])
    assert (weights[0] > 0).sum().item() < 10
