"""logit_bias, min_tokens and the penalties change exactly the tokens they should, by the right amount."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from firebox.engine.runner.logit_edits import LogitBiasCache
from firebox.engine.runner.sampling_batch import build_sampling_batch
from firebox.engine.types import SamplingParams
from tests.runner.helpers import CPU, draw_frequencies, make_request, sample

VOCAB = 32
PROMPT = (3, 5, 5, 9)
OUTPUT = (5, 7, 7, 7, 11)


def edited(logits: torch.Tensor, requests: list, eos_ids=(0,)) -> torch.Tensor:
    edits = build_sampling_batch(requests, logits.shape[1], eos_ids, CPU).edits
    return logits if edits is None else edits.apply(logits)


def test_repetition_penalty_matches_transformers_over_prompt_and_output() -> None:
    logits = torch.randn(1, VOCAB) * 3
    logits[0, 5], logits[0, 7] = 2.0, -2.0  # one seen token of each sign
    out = edited(logits, [make_request(SamplingParams(repetition_penalty=1.5), OUTPUT, PROMPT)])
    reference = RepetitionPenaltyLogitsProcessor(1.5)(torch.tensor([PROMPT + OUTPUT]), logits.clone())
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    assert out[0, 5].item() == pytest.approx(2.0 / 1.5) and out[0, 7].item() == pytest.approx(-3.0)
    unseen = [t for t in range(VOCAB) if t not in PROMPT + OUTPUT]
    assert torch.equal(out[0, unseen], logits[0, unseen])


def test_frequency_and_presence_penalties_count_output_tokens_only() -> None:
    logits = torch.randn(1, VOCAB)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    out = edited(logits, [make_request(params, OUTPUT, PROMPT)])
    expected = logits.clone()
    for token, count in {5: 1, 7: 3, 11: 1}.items():
        expected[0, token] -= 0.5 * count + 0.25
    torch.testing.assert_close(out, expected)
    assert out[0, 3] == logits[0, 3] and out[0, 9] == logits[0, 9]  # prompt-only tokens untouched


def test_penalties_apply_in_order_and_leave_other_rows_bit_exact() -> None:
    logits = torch.randn(3, VOCAB) * 2
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0, logit_bias=((7, 4.0),))
    requests = [make_request(SamplingParams(), OUTPUT, PROMPT), make_request(params, OUTPUT, PROMPT)]
    requests.append(make_request(SamplingParams(presence_penalty=1.0), OUTPUT, PROMPT))
    before = logits.clone()
    out = edited(logits, requests)
    assert torch.equal(logits, before)  # raw logits stay for logprobs
    assert torch.equal(out[0], logits[0])
    biased = logits[1, 7] + 4.0  # bias first, then repetition on its sign, then 1.0 * count 3
    expected_7 = (biased / 2.0 if biased > 0 else biased * 2.0) - 3.0
    assert out[1, 7].item() == pytest.approx(expected_7.item())
    assert out[2, 7].item() == pytest.approx(logits[2, 7].item() - 1.0)


def test_logit_bias_plus_100_forces_and_minus_100_bans() -> None:
    logits = torch.randn(VOCAB) * 2
    forced = draw_frequencies(logits, SamplingParams(logit_bias=((13, 100.0),)), 2_000)
    assert forced[13].item() == 1.0
    best = int(logits.argmax())
    banned = draw_frequencies(logits, SamplingParams(temperature=2.0, logit_bias=((best, -100.0),)), 20_000)
    assert banned[best].item() == 0.0 and (banned > 0).sum().item() > 10
    ban_best = SamplingParams(temperature=0.0, logit_bias=((best, -100.0),))
    greedy = sample(logits.unsqueeze(0), [make_request(ban_best)])
    assert greedy.sampled_token_ids.item() == int(logits.topk(2).indices[1])


@pytest.mark.parametrize("num_generated, banned", [(0, True), (2, True), (3, False), (5, False)])
def test_min_tokens_masks_eos_and_stop_ids_until_reached(num_generated: int, banned: bool) -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, [0, 1, 4]] = 10.0  # EOS ids 0 and 1, stop id 4 are the likeliest
    params = SamplingParams(min_tokens=3, stop_token_ids=(4,))
    out = edited(logits, [make_request(params, output_ids=[20] * num_generated)], eos_ids=(0, 1))
    masked = out[0, [0, 1, 4]]
    assert bool(torch.isneginf(masked).all()) is banned
    if not banned:
        assert torch.equal(out, logits)
    assert torch.isfinite(out[0, 2:4]).all()


def test_min_tokens_with_ignore_eos_masks_stop_ids_only() -> None:
    logits = torch.zeros(1, VOCAB)
    params = SamplingParams(min_tokens=2, stop_token_ids=(4,), ignore_eos=True)
    out = edited(logits, [make_request(params)], eos_ids=(0,))
    assert torch.isneginf(out[0, 4]) and out[0, 0] == 0.0


def test_greedy_respects_min_tokens() -> None:
    logits = torch.zeros(2, VOCAB)
    logits[:, 0] = 5.0  # EOS best
    logits[:, 8] = 4.0
    params = SamplingParams(temperature=0.0, min_tokens=1)
    tokens = sample(logits, [make_request(params), make_request(params, output_ids=[8])]).sampled_token_ids
    assert tokens.tolist() == [8, 0]


def test_out_of_vocabulary_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="logit_bias"):
        build_sampling_batch([make_request(SamplingParams(logit_bias=((VOCAB, 1.0),)))], VOCAB, (0,), CPU)
    with pytest.raises(ValueError, match="stop_token_ids"):
        params = SamplingParams(min_tokens=1, stop_token_ids=(-1,))
        build_sampling_batch([make_request(params)], VOCAB, (0,), CPU)


class _CountedBias(tuple):
    """A logit_bias that counts how often it is read entry by entry."""

    def __iter__(self):
        self.reads = getattr(self, "reads", 0) + 1
        return super().__iter__()


def _with_id(req, request_id: str):
    return dataclasses.replace(req, request_id=request_id)


def test_logit_bias_is_built_once_per_request_and_rebuilt_after_it_is_freed() -> None:
    cache = LogitBiasCache()
    bias = _CountedBias(((3, 1.0), (7, -2.0), (3, 5.0)))  # a repeated id: the last bias wins
    first = _with_id(make_request(SamplingParams(logit_bias=bias)), "a")
    other = _with_id(make_request(SamplingParams(logit_bias=((9, 4.0),))), "b")
    plain = _with_id(make_request(SamplingParams()), "c")
    reads_at_admission = getattr(bias, "reads", 0)
    logits = torch.zeros(3, VOCAB)
    for _ in range(4):  # four steps, the same requests
        edits = build_sampling_batch([plain, first, other], VOCAB, (0,), CPU, bias_cache=cache).edits
        out = edits.apply(logits)
        assert out[1, 3].item() == 5.0 and out[1, 7].item() == -2.0 and out[2, 9].item() == 4.0
        assert torch.count_nonzero(out).item() == 3
    assert bias.reads - reads_at_admission == 1 and len(cache) == 2
    cache.drop(["a", "c"])  # the scheduler freed them (finished or preempted)
    assert len(cache) == 1
    build_sampling_batch([first], VOCAB, (0,), CPU, bias_cache=cache)
    assert bias.reads - reads_at_admission == 2
