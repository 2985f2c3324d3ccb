"""Qwen3-MoE: Qwen3 attention with sparse MoE MLPs.

Router: softmax over all experts -> top k -> renormalized when `norm_topk_prob`. Layer i is sparse
unless it is listed in `mlp_only_layers` or (i + 1) is not a multiple of `decoder_sparse_step`.
Checkpoints name experts one by one (`mlp.experts.<e>.gate_proj.weight`); transformers >= 5
state dicts hold them already stacked (`mlp.experts.gate_up_proj`); both load. Its sliding window,
under `use_sliding_window`, covers every layer (no `layer_types`).
"""

from __future__ import annotations

import torch
from torch import nn

from firebox.loader.arch_config import ArchConfig
from firebox.models.decoder import DENSE_WEIGHT_RULES
from firebox.models.layers.mlp import GatedMLP
from firebox.models.layers.moe import SparseMoeBlock
from firebox.models.layers.weights import WeightRule, weight_rule
from firebox.models.qwen3 import Qwen3ForCausalLM
from firebox.models.settings import gated_sliding_window

QWEN3_MOE_WEIGHT_RULES: tuple[WeightRule, ...] = (
    weight_rule(
        r"(?P<p>.+\.mlp\.experts)\.(?P<expert>\d+)\.(?P<part>gate|up)_proj\.weight",
        r"\g<p>.gate_up_proj",
        ("gate", "up"),
    ),
    weight_rule(r"(?P<p>.+\.mlp\.experts)\.(?P<expert>\d+)\.down_proj\.weight", r"\g<p>.down_proj"),
    *DENSE_WEIGHT_RULES,
)


def num_experts(config: ArchConfig) -> int:
    # config.json says num_experts; transformers >= 5 serializes it as num_local_experts.
    return int(config.get("num_experts") or config.get("num_local_experts") or 0)


def is_sparse_layer(config: ArchConfig, layer_idx: int) -> bool:
    step = config.get("decoder_sparse_step", 1) or 1
    return (
        layer_idx not in (config.get("mlp_only_layers") or ())
        and num_experts(config) > 0
        and (layer_idx + 1) % step == 0
    )


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    weight_rules = QWEN3_MOE_WEIGHT_RULES
    layer_sliding_window = staticmethod(gated_sliding_window)

    @classmethod
    def make_mlp(cls, config: ArchConfig, layer_idx: int, dtype: torch.dtype) -> nn.Module:
        if not is_sparse_layer(config, layer_idx):
            return GatedMLP(config.hidden_size, config.intermediate_size, False, dtype)
        return SparseMoeBlock(
            config.hidden_size,
            num_experts(config),
            int(config.get("num_experts_per_tok", 8)),
            int(config.get("moe_intermediate_size", config.intermediate_size)),
            renormalize=bool(config.get("norm_topk_prob", False)),
            dtype=dtype,
        )
