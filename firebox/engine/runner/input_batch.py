"""Flattens a scheduled batch into model inputs: no padding, decodes first.

Everything here is built from Python lists in one pass and moved to the device once per step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from firebox.engine.types import ScheduledRequest, SchedulerOutput
from firebox.models.attention import AttentionBatch


@dataclass(slots=True)
class PromptLogprobSpan:
    request_id: str
    hidden_rows: list[int]  # rows of the step's hidden states whose logits score a prompt token
    target_ids: list[int]  # the prompt token each of those rows predicts


@dataclass(slots=True)
class ModelInput:
    requests: list[ScheduledRequest]  # in batch order (decodes first)
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    attention: AttentionBatch
    sample_rows: list[int]  # rows that sample, in batch order: a request's last token, and each of its drafts
    sample_requests: list[ScheduledRequest]  # one per sample row
    prompt_spans: list[PromptLogprobSpan]


def _is_decode(req: ScheduledRequest) -> bool:
    return len(req.token_ids) == 1 and req.start_pos > 0


def _prompt_span(req: ScheduledRequest, first_row: int) -> PromptLogprobSpan | None:
    """Row i of the chunk (position start_pos + i) predicts the prompt token at start_pos + i + 1."""
    num_prompt = len(req.prompt_token_ids)
    last = min(req.start_pos + len(req.token_ids), num_prompt - 1)  # exclusive bound on predicting rows
    positions = range(req.start_pos, last)
    if not positions:
        return None
    return PromptLogprobSpan(
        req.request_id,
        [first_row + p - req.start_pos for p in positions],
        [req.prompt_token_ids[p + 1] for p in positions],
    )


def _sampled_positions(req: ScheduledRequest) -> list[ScheduledRequest]:
    """One sampling row per position. Position j follows draft j: it sees the drafts before it
    as output (penalties, min_tokens) and draws the seeded uniform of output position
    `seed_offset + j`, so it samples exactly what plain decoding would have sampled there."""
    if not req.draft_token_ids:
        return [req]
    drafts = req.draft_token_ids
    return [req] + [
        dataclasses.replace(req, output_token_ids=[*req.output_token_ids, *drafts[:j]], seed_offset=req.seed_offset + j)
        for j in range(1, len(drafts) + 1)
    ]


def prepare_inputs(batch: SchedulerOutput, block_size: int, device: torch.device) -> ModelInput:
    decodes = [r for r in batch.requests if _is_decode(r)]
    requests = decodes + [r for r in batch.requests if not _is_decode(r)]
    token_ids: list[int] = []
    positions: list[int] = []
    sample_rows: list[int] = []
    sample_requests: list[ScheduledRequest] = []
    prompt_spans: list[PromptLogprobSpan] = []
    for req in requests:
        first_row = len(token_ids)
        token_ids.extend(req.token_ids)
        positions.extend(range(req.start_pos, req.start_pos + len(req.token_ids)))
        if req.sample:
            num_sampled = req.num_sampled  # the last token, and each draft after it
            sample_rows.extend(range(len(token_ids) - num_sampled, len(token_ids)))
            sample_requests.extend(_sampled_positions(req))
        if req.compute_prompt_logprobs and (span := _prompt_span(req, first_row)):
            prompt_spans.append(span)
    attention = AttentionBatch(
        query_lens=[len(r.token_ids) for r in requests],
        context_lens=[r.start_pos for r in requests],
        block_tables=[r.block_ids for r in requests],
        block_size=block_size,
        num_decodes=len(decodes),
    )
    return ModelInput(
        requests=requests,
        input_ids=torch.tensor(token_ids, dtype=torch.long, device=device),
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        attention=attention,
        sample_rows=sample_rows,
        sample_requests=sample_requests,
        prompt_spans=prompt_spans,
    )
