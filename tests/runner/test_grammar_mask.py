"""The grammar mask in the batched sampler: a constrained row never samples a disallowed token,
however much the model prefers it, and the other rows of the batch are untouched, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from firebox.engine.runner.grammar_mask import AllowedTokens, mask_with_torch_, unpack_bitmask
from firebox.engine.runner.sampler import Sampler
from firebox.engine.runner.sampling_batch import build_sampling_batch
from firebox.engine.types import SamplingParams, ScheduledRequest, TokenBitmask
from firebox.kernels import load_native
from tests.runner.helpers import CPU, EOS_IDS, make_request

VOCAB = 100
ALLOWED = [3, 40, 77]  # what the grammar allows the constrained row
FORBIDDEN_FAVOURITE = 5  # what the model wants most


def _bitmask(allowed: list[int], vocab: int = VOCAB) -> np.ndarray:  # [1, words] int32
    bits = np.zeros(((vocab + 31) // 32) * 32, dtype=np.uint8)
    bits[allowed] = 1
    return np.packbits(bits, bitorder="little").view(np.int32)[None, :]


def _requests(params: list[SamplingParams]) -> list[ScheduledRequest]:
    return [dataclasses.replace(make_request(p), request_id=f"r{i}") for i, p in enumerate(params)]


def _logits(num_rows: int) -> torch.Tensor:
    torch.manual_seed(0)
    logits = torch.randn(num_rows, VOCAB)
    logits[:, FORBIDDEN_FAVOURITE] = 50.0  # the model is all but certain of a forbidden token
    return logits


def _sample(logits: torch.Tensor, params: list[SamplingParams], mask: TokenBitmask | None):
    batch = build_sampling_batch(_requests(params), VOCAB, EOS_IDS, CPU, mask)
    return Sampler()(logits, batch)


@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0), SamplingParams(temperature=1.5, top_p=0.9)],
)
def test_a_constrained_row_samples_only_allowed_tokens(params: SamplingParams) -> None:
    mask = TokenBitmask(["r0"], _bitmask(ALLOWED))
    for seed in range(50):
        seeded = dataclasses.replace(params, seed=seed)
        token = _sample(_logits(1), [seeded], mask).sampled_token_ids.item()
        assert token in ALLOWED


def test_logit_bias_cannot_revive_a_disallowed_token() -> None:
    biased = SamplingParams(temperature=0.0, logit_bias=((7, 100.0),))
    mask = TokenBitmask(["r0"], _bitmask(ALLOWED))
    assert _sample(_logits(1), [biased], mask).sampled_token_ids.item() in ALLOWED


def test_unconstrained_rows_are_unchanged_bit_for_bit() -> None:
    params = [SamplingParams(temperature=1.0, seed=1, logprobs=3), SamplingParams(temperature=1.0, seed=2, logprobs=3)]
    params += [SamplingParams(temperature=0.0, logprobs=3)]
    logits = _logits(3)
    free = _sample(logits, params, None)
    constrained = _sample(logits, params, TokenBitmask(["r1"], _bitmask(ALLOWED)))
    free_ids, free_logprobs = free.to_lists()
    ids, logprobs = constrained.to_lists()
    assert ids[1] in ALLOWED and free_ids[1] == FORBIDDEN_FAVOURITE
    assert [ids[0], ids[2]] == [free_ids[0], free_ids[2]]
    assert [logprobs[0], logprobs[2]] == [free_logprobs[0], free_logprobs[2]]


def test_masking_touches_only_the_constrained_rows_and_keeps_the_raw_logits() -> None:
    logits = _logits(3)
    raw = logits.clone()
    mask = TokenBitmask(["r2"], _bitmask(ALLOWED))
    batch = build_sampling_batch(_requests([SamplingParams()] * 3), VOCAB, EOS_IDS, CPU, mask)
    masked = batch.allowed.mask_(logits.clone())
    assert torch.equal(masked[:2], raw[:2])
    assert torch.isinf(masked[2]).sum() == VOCAB - len(ALLOWED)
    assert torch.equal(masked[2, ALLOWED], raw[2, ALLOWED])
    Sampler()(logits, batch)
    assert torch.equal(logits, raw)  # the sampler never edits its input: logprobs read the raw logits


def test_unpack_matches_the_bit_layout_and_masks_tokens_past_it() -> None:
    bitmask = torch.from_numpy(_bitmask([0, 3, 31, 32, 63], vocab=64))
    unpacked = unpack_bitmask(bitmask, 70)  # the model's vocabulary is padded past the tokenizer's
    assert unpacked.shape == (1, 70)
    assert unpacked[0].nonzero().flatten().tolist() == [0, 3, 31, 32, 63]



@pytest.mark.parametrize("vocab", [100, 49_157])  # a vocabulary padded past the bitmask's width, and a real size
def test_the_native_mask_matches_the_torch_mask(vocab: int) -> None:
    if not load_native():
        pytest.skip("no native kernels on this machine")
    generator = np.random.default_rng(0)
    words = (vocab - 5 + 31) // 32  # the tokenizer's vocabulary is a few tokens short of the model's
    bitmask = generator.integers(-(2**31), 2**31, size=(3, words), dtype=np.int64).astype(np.int32)
    bitmask[1, : words // 2] = 0  # whole words disallowed, as most of a grammar's mask is
    bitmask[2, words // 2 :] = -1  # and whole words allowed
    for row_ids, num_rows in (([0, 2, 3], 4), ([0, 1, 2], 3)):  # a free row 1; every row constrained
        allowed = AllowedTokens(torch.tensor(row_ids), torch.from_numpy(bitmask), covers_all_rows=num_rows == 3)
        logits = torch.randn(num_rows, vocab)
        native = allowed.mask_(logits.clone())
        assert torch.equal(native, mask_with_torch_(logits.clone(), allowed))
        assert torch.isinf(native[row_ids]).all(-1).logical_not().any()  # something is allowed
        if num_rows == 4:
            assert torch.equal(native[1], logits[1])
