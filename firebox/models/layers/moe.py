"""Sparse mixture-of-experts in plain torch: route, group tokens by expert, run each expert on its
own tokens only, scatter-add the weighted outputs back.

Expert weights are stacked per layer, as transformers >= 5 stores them: gate|up as
[num_experts, 2 * moe_intermediate, hidden] and down as [num_experts, hidden, moe_intermediate].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from firebox.models.layers.activation import silu_and_mul
from firebox.models.layers.linear import Linear


def select_experts(
    router_logits: torch.Tensor, top_k: int, renormalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:  # weights [n, top_k] float32, expert ids [n, top_k]
    """Softmax over all experts, keep the top k, optionally renormalize them to sum to one
    (renormalizing equals Mixtral's softmax over the chosen logits)."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, expert_ids


class StackedExperts(nn.Module):
    def __init__(
        self, num_experts: int, hidden_size: int, intermediate_size: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.intermediate_size = intermediate_size
        shape_gate_up = (num_experts, 2 * intermediate_size, hidden_size)
        shape_down = (num_experts, hidden_size, intermediate_size)
        self.gate_up_proj = nn.Parameter(torch.empty(shape_gate_up, dtype=dtype), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(shape_down, dtype=dtype), requires_grad=False)

    def weight_part_sizes(self) -> dict[str, tuple[int, ...]]:
        return {"gate_up_proj": (self.intermediate_size, self.intermediate_size)}

    def forward(
        self,
        hidden: torch.Tensor,  # [n, hidden]
        topk_weights: torch.Tensor,  # [n, top_k]
        topk_ids: torch.Tensor,  # [n, top_k]
    ) -> torch.Tensor:  # [n, hidden]
        top_k = topk_ids.shape[1]
        flat_ids = topk_ids.flatten()  # [n * top_k]
        order = torch.argsort(flat_ids, stable=True)
        token_ids = order // top_k  # source token of each sorted (token, expert) pair
        # The per-expert row counts decide the slices, so they must reach the host: the one
        # device sync of a MoE layer (free on CPU).
        counts = torch.bincount(flat_ids, minlength=self.num_experts).tolist()
        grouped = hidden.index_select(0, token_ids)  # [n * top_k, hidden]
        out = torch.empty_like(grouped)
        start = 0
        for expert, count in enumerate(counts):
            if count:
                rows = grouped[start : start + count]
                act = silu_and_mul(F.linear(rows, self.gate_up_proj[expert]))
                out[start : start + count] = F.linear(act, self.down_proj[expert])
                start += count
        out *= topk_weights.flatten()[order].unsqueeze(1).to(out.dtype)
        return torch.zeros_like(hidden).index_add_(0, token_ids, out)


class SparseMoeBlock(nn.Module):
    """Router (`gate`) plus stacked experts; parameter names follow transformers' MoE blocks."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_k: int,
        intermediate_size: int,
        renormalize: bool,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok={top_k} must be in 1..num_experts={num_experts}")
        self.top_k = top_k
        self.renormalize = renormalize
        self.gate = Linear(hidden_size, num_experts, bias=False, dtype=dtype)
        self.experts = StackedExperts(num_experts, hidden_size, intermediate_size, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, hidden]
        weights, expert_ids = select_experts(self.gate(x), self.top_k, self.renormalize)
        return self.experts(x, weights, expert_ids)
