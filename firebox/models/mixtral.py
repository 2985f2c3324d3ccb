"""Mixtral: the Llama decoder with a sparse MoE MLP in every layer.

Router: top k of the router logits, softmax over the chosen (computed as softmax -> top k ->
renormalize, which is the same). `intermediate_size` is each expert's width. Checkpoints name the
block `block_sparse_moe` with experts `w1` (gate), `w3` (up), `w2` (down); we keep the
transformers >= 5 names (`mlp.gate`, `mlp.experts.gate_up_proj`, `mlp.experts.down_proj`).
`sliding_window`, as Mistral's, covers every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from firebox.loader.arch_config import ArchConfig
from firebox.models.decoder import DENSE_WEIGHT_RULES, DecoderForCausalLM
from firebox.models.layers.moe import SparseMoeBlock
from firebox.models.layers.weights import WeightRule, weight_rule
from firebox.models.settings import sliding_window_everywhere

MIXTRAL_WEIGHT_RULES: tuple[WeightRule, ...] = (
    weight_rule(
        r"(?P<p>.+)\.block_sparse_moe\.experts\.(?P<expert>\d+)\.(?P<part>w1|w3)\.weight",
        r"\g<p>.mlp.experts.gate_up_proj",
        ("w1", "w3"),
    ),
    weight_rule(
        r"(?P<p>.+)\.block_sparse_moe\.experts\.(?P<expert>\d+)\.w2\.weight", r"\g<p>.mlp.experts.down_proj"
    ),
    weight_rule(r"(?P<p>.+)\.block_sparse_moe\.gate\.weight", r"\g<p>.mlp.gate.weight"),
    *DENSE_WEIGHT_RULES,
)


class MixtralForCausalLM(DecoderForCausalLM):
    weight_rules = MIXTRAL_WEIGHT_RULES
    layer_sliding_window = staticmethod(sliding_window_everywhere)

    @classmethod
    def make_mlp(cls, config: ArchConfig, layer_idx: int, dtype: torch.dtype) -> nn.Module:
        return SparseMoeBlock(
            config.hidden_size,
            int(config.get("num_local_experts", 8)),
            int(config.get("num_experts_per_tok", 2)),
            config.intermediate_size,
            renormalize=True,
            dtype=dtype,
        )
