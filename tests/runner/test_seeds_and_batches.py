"""Seeded rows are stateless and batch-independent; every row of a mixed batch gets what it would alone."""

from __future__ import annotations

import torch

from firebox.engine.types import SamplingParams
from tests.runner.helpers import make_request, sample

VOCAB = 3000  # two full blocks of the inverse CDF and a short one


def step_logits(step: int, num_rows: int = 1) -> torch.Tensor:
    """Logits that vary with the step (as a model's would), the same for a given step."""
    gen = torch.Generator().manual_seed(1000 + step)
    return (torch.randn(1, VOCAB, generator=gen) * 2).expand(num_rows, -1).contiguous()


def generate(
    params: SamplingParams, num_steps: int, first_offset: int = 0, others: list | None = None
) -> list[int]:
    """The seeded row's tokens over `num_steps` steps, placed in the middle of `others`."""
    tokens = []
    for step in range(first_offset, first_offset + num_steps):
        neighbours = [make_request(p, seed_offset=step) for p in (others or [])]
        requests = neighbours[: len(neighbours) // 2] + [make_request(params, seed_offset=step)]
        requests += neighbours[len(neighbours) // 2 :]
        logits = step_logits(step, len(requests))
        logits[: len(neighbours) // 2] += torch.randn(len(neighbours) // 2, VOCAB)  # other rows, other logits
        tokens.append(sample(logits, requests).sampled_token_ids[len(neighbours) // 2].item())
    return tokens


def test_seeded_row_is_the_same_alone_or_among_other_rows() -> None:
    params = SamplingParams(temperature=1.3, seed=42)
    alone = generate(params, 30)
    others = [
        SamplingParams(seed=7),
        SamplingParams(temperature=0.0),
        SamplingParams(top_p=0.5, top_k=20, min_p=0.1, typical_p=0.7),  # stages the seeded row skips
        SamplingParams(seed=43, repetition_penalty=1.2, logit_bias=((3, 2.0),)),
    ]
    assert generate(params, 30, others=others) == alone
    assert len(set(alone)) > 10  # really random


def test_seeded_row_with_truncation_is_the_same_alone_or_batched() -> None:
    params = SamplingParams(top_p=0.9, top_k=100, seed=5)
    assert generate(params, 20) == generate(params, 20, others=[SamplingParams(), SamplingParams(seed=6)] * 3)


def test_different_seeds_give_different_sequences() -> None:
    sequences = {tuple(generate(SamplingParams(seed=seed), 20)) for seed in range(5)}
    assert len(sequences) == 5


def test_seed_and_offset_resume_the_same_sequence() -> None:
    params = SamplingParams(seed=2024, temperature=1.5)
    whole = generate(params, 20)
    assert generate(params, 10, first_offset=10) == whole[10:]  # e.g. after a preemption


def test_unseeded_rows_differ_run_to_run() -> None:
    runs = {tuple(generate(SamplingParams(temperature=1.5), 20)) for _ in range(3)}
    assert len(runs) == 3


def test_mixed_batch_gives_each_row_what_it_gets_alone() -> None:
    prompt, output = [1, 2, 3], [4, 4, 5]
    rows = [
        (SamplingParams(temperature=0.0), []),
        (SamplingParams(seed=11, top_p=0.8), []),
        (SamplingParams(temperature=0.0, repetition_penalty=3.0, frequency_penalty=2.0), output),
        (SamplingParams(seed=12, temperature=0.7, presence_penalty=5.0, top_k=5), output),
        (SamplingParams(temperature=0.0, logit_bias=((9, 50.0),)), []),
        (SamplingParams(seed=13, min_tokens=5, typical_p=0.8), output),
    ]
    logits = torch.randn(len(rows), VOCAB) * 2
    logits[:, 4] = 20.0  # the repeated token is the best: penalties must move the choice
    requests = [make_request(p, out, prompt) for p, out in rows]
    batched = sample(logits, requests).sampled_token_ids.tolist()
    alone = [sample(logits[i : i + 1], [requests[i]]).sampled_token_ids.item() for i in range(len(rows))]
    assert batched == alone
    assert batched[0] == 4 and batched[2] != 4 and batched[4] == 9


def test_unseeded_random_rows_in_a_mixed_batch_follow_their_own_parameters() -> None:
    logits = torch.randn(VOCAB) * 2
    best3 = set(logits.topk(3).indices.tolist())
    requests = [make_request(SamplingParams(temperature=0.0)), make_request(SamplingParams(top_k=3))] * 2_000
    tokens = sample(logits.expand(len(requests), -1).contiguous(), requests).sampled_token_ids
    assert set(tokens[0::2].tolist()) == {int(logits.argmax())}
    assert set(tokens[1::2].tolist()) == best3
