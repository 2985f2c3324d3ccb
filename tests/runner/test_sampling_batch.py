"""What build_sampling_batch turns on and off, the generator seeding, and the draw itself."""

from __future__ import annotations

import pytest
import torch

from firebox.engine.runner.sampler import CDF_BLOCK, Sampler, sample_inverse_cdf
from firebox.engine.runner.sampling_batch import seeded_generator
from firebox.engine.types import SamplingParams
from tests.runner.helpers import CPU, batch_of


def test_plain_batch_skips_every_stage() -> None:
    batch = batch_of([SamplingParams()] * 4, 100)
    rows = batch.random
    assert rows is not None and rows.row_ids is None and batch.greedy_row_ids is None
    assert (rows.temperature, rows.top_k, rows.top_p, rows.min_p, rows.typical_rows) == (None,) * 5
    assert batch.edits is None and batch.max_logprobs is None and rows.generators == {}


def test_all_greedy_batch_has_no_random_rows() -> None:
    batch = batch_of([SamplingParams(temperature=0.0), SamplingParams(top_k=1, seed=3)], 100)
    assert batch.all_greedy and batch.greedy_row_ids is None


def test_mixed_batch_splits_rows_and_keeps_only_the_stages_used() -> None:
    params = [SamplingParams(temperature=0.0), SamplingParams(top_p=0.9, seed=1), SamplingParams(top_k=500)]
    batch = batch_of(params, 100)
    rows = batch.random
    assert batch.greedy_row_ids.tolist() == [0] and rows.row_ids.tolist() == [1, 2]
    assert rows.top_k is None  # 500 >= vocab: off
    assert rows.top_p.squeeze(1).tolist() == pytest.approx([0.9, 1.0])
    assert list(rows.generators) == [0]


def test_seeded_generator_depends_on_seed_and_offset_only() -> None:
    def draw(seed: int, offset: int) -> list[float]:
        return torch.rand(3, generator=seeded_generator(seed, offset, CPU)).tolist()

    assert draw(5, 0) == draw(5, 0)
    assert len({tuple(draw(s, o)) for s, o in [(5, 0), (5, 1), (6, 0), (0, 5), (-5, 0), (2**70, 0)]}) == 6


def test_logits_shape_must_match_the_batch() -> None:
    with pytest.raises(ValueError, match="do not match"):
        Sampler()(torch.zeros(3, 100), batch_of([SamplingParams()] * 2, 100))


def test_inverse_cdf_across_blocks_and_a_short_last_block() -> None:
    vocab = 2 * CDF_BLOCK + 452
    support = [0, CDF_BLOCK - 1, CDF_BLOCK, 2 * CDF_BLOCK - 1, 2 * CDF_BLOCK, vocab - 1]
    weights = torch.zeros(1, vocab)
    weights[0, support] = torch.tensor([1.0, 2.0, 3.0, 0.5, 1.5, 2.0])
    num_draws = 40_000
    token_ids = sample_inverse_cdf(weights.expand(num_draws, -1).contiguous(), torch.rand(num_draws, 1))
    freqs = torch.bincount(token_ids, minlength=vocab).double() / num_draws
    assert set(freqs.nonzero().squeeze(1).tolist()) == set(support)
    assert (freqs - weights[0].double() / weights.sum()).abs().max().item() < 0.01
    just_below_one = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()
    edges = sample_inverse_cdf(weights.expand(2, -1).contiguous(), torch.tensor([[0.0], [just_below_one]]))
    assert edges.tolist() == [0, vocab - 1]


def test_inverse_cdf_never_picks_a_zero_weight_token() -> None:
    weights = torch.tensor([[0.0, 1.0, 0.0, 2.0, 0.0]] * 4)
    just_below_one = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item()
    uniforms = torch.tensor([[0.0], [1.0 / 3.0], [0.5], [just_below_one]])
    assert sample_inverse_cdf(weights, uniforms).tolist() == [1, 3, 3, 3]
    tiny = torch.tensor([[1e-30, 0.0, 3e-30, 0.0]])
    assert sample_inverse_cdf(tiny, torch.tensor([[just_below_one]])).item() == 2


def test_sampler_leaves_the_logits_untouched() -> None:
    logits = torch.randn(3, 50)
    before = logits.clone()
    params = [SamplingParams(temperature=0.5, top_p=0.5, repetition_penalty=2.0, logit_bias=((1, 3.0),))] * 3
    Sampler()(logits, batch_of(params, 50))
    assert torch.equal(logits, before)
