"""Synthetic requests and repeated draws for the sampler tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from firebox.engine.runner.sampler import Sampler, SamplerOutput
from firebox.engine.runner.sampling_batch import SamplingBatch, build_sampling_batch
from firebox.engine.types import SamplingParams, ScheduledRequest

CPU = torch.device("cpu")
EOS_IDS = (0,)


def make_request(
    params: SamplingParams,
    output_ids: Sequence[int] = (),
    prompt_ids: Sequence[int] = (1, 2, 3),
    seed_offset: int | None = None,
) -> ScheduledRequest:
    return ScheduledRequest(
        request_id="r",
        token_ids=[prompt_ids[-1] if not output_ids else output_ids[-1]],
        start_pos=len(prompt_ids) + len(output_ids) - 1,
        block_ids=[0],
        sample=True,
        sampling=params,
        output_token_ids=list(output_ids),
        prompt_token_ids=list(prompt_ids),
        seed_offset=len(output_ids) if seed_offset is None else seed_offset,
        compute_prompt_logprobs=False,
    )


def batch_of(
    params: Sequence[SamplingParams], vocab_size: int, eos_ids: Sequence[int] = EOS_IDS
) -> SamplingBatch:
    return build_sampling_batch([make_request(p) for p in params], vocab_size, eos_ids, CPU)


def sample(
    logits: torch.Tensor, requests: Sequence[ScheduledRequest], eos_ids: Sequence[int] = EOS_IDS
) -> SamplerOutput:
    batch = build_sampling_batch(requests, logits.shape[1], eos_ids, CPU)
    return Sampler()(logits, batch)


def sample_params(logits: torch.Tensor, params: Sequence[SamplingParams]) -> list[int]:
    return sample(logits, [make_request(p) for p in params]).sampled_token_ids.tolist()


def draw_frequencies(row_logits: torch.Tensor, params: SamplingParams, num_draws: int) -> torch.Tensor:
    """Empirical token frequencies [vocab] over `num_draws` rows sampled from the same logits."""
    logits = row_logits.unsqueeze(0).expand(num_draws, -1).contiguous()
    token_ids = sample(logits, [make_request(params)] * num_draws).sampled_token_ids
    return torch.bincount(token_ids, minlength=row_logits.numel()).double() / num_draws


def logits_from_probs(probs: Sequence[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()
