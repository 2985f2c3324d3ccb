"""Qwen3-MoE and Mixtral against transformers, from stacked and per-expert checkpoint names."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from firebox.loader.arch_config import ArchConfig
from firebox.models.layers.moe import SparseMoeBlock
from firebox.models.qwen3_moe import is_sparse_layer
from tests.models import helpers as h

TINY = h.tiny(num_experts_per_tok=2)
QWEN3_MOE = dict(TINY, num_hidden_layers=3, num_experts=4, moe_intermediate_size=32)

VARIANTS = {
    "qwen3-moe-norm-dense-layer": (
        Qwen3MoeForCausalLM,
        Qwen3MoeConfig(**QWEN3_MOE, norm_topk_prob=True, mlp_only_layers=[1]),
    ),
    "qwen3-moe-sparse-step-2": (
        Qwen3MoeForCausalLM,
        Qwen3MoeConfig(**QWEN3_MOE, norm_topk_prob=False, decoder_sparse_step=2),
    ),
    "mixtral": (
        MixtralForCausalLM,
        MixtralConfig(**TINY, num_local_experts=4),
    ),
}


def _split_experts(
    state: dict[str, torch.Tensor], names: tuple[str, str, str], block: str
) -> dict[str, torch.Tensor]:
    """Rewrite stacked expert tensors into the one-tensor-per-expert names that checkpoints use."""
    gate, up, down = names
    out = {}
    for name, tensor in state.items():
        match = re.fullmatch(r"(.+)\.mlp\.experts\.(gate_up_proj|down_proj)", name)
        if match is None:
            out[name.replace(".mlp.gate.", f".{block}.gate.")] = tensor
            continue
        prefix = f"{match[1]}.{block}.experts"
        for e, expert in enumerate(tensor):
            if match[2] == "down_proj":
                out[f"{prefix}.{e}.{down}"] = expert
            else:
                out[f"{prefix}.{e}.{gate}"], out[f"{prefix}.{e}.{up}"] = expert.chunk(2)
    return out


SPLIT_NAMES = {
    Qwen3MoeForCausalLM: (("gate_proj.weight", "up_proj.weight", "down_proj.weight"), "mlp"),
    MixtralForCausalLM: (("w1.weight", "w3.weight", "w2.weight"), "block_sparse_moe"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_prompt_logits_match_transformers(name: str) -> None:
    ours = h.check_prompt_matches_transformers(h.make_hf_model(*VARIANTS[name]))
    assert any(isinstance(layer.mlp, SparseMoeBlock) for layer in ours.model.layers)


@pytest.mark.parametrize("name", ["qwen3-moe-norm-dense-layer", "mixtral"])
def test_per_expert_checkpoint_names_load_the_same(name: str) -> None:
    hf_cls, config = VARIANTS[name]
    hf = h.make_hf_model(hf_cls, config)
    ours = h.build_ours(hf)
    split = _split_experts(hf.state_dict(), *SPLIT_NAMES[hf_cls])
    assert not any(n.endswith("gate_up_proj") for n in split)
    from_split = type(ours)(ours.config, ours.model.layers[0].self_attn.backend)
    from_split.load_weights(split.items())
    for (name_a, a), (name_b, b) in zip(
        ours.state_dict().items(), from_split.state_dict().items(), strict=True
    ):
        assert name_a == name_b and torch.equal(a, b), name_a


def test_moe_decode_steps_match_full_sequence() -> None:
    hf = h.make_hf_model(*VARIANTS["mixtral"])
    tokens = h.PROMPT + [9, 10, 11]
    logits = h.PagedRunner(h.build_ours(hf)).run_chunks("s", tokens, [12, 8, 1, 1, 1])
    h.assert_logits_close(logits, h.hf_logits(hf, tokens))


def test_sparse_layer_selection_follows_config() -> None:
    dense_1 = h.arch_config_of(h.make_hf_model(*VARIANTS["qwen3-moe-norm-dense-layer"]))
    step_2 = h.arch_config_of(h.make_hf_model(*VARIANTS["qwen3-moe-sparse-step-2"]))
    assert [is_sparse_layer(dense_1, i) for i in range(3)] == [True, False, True]
    assert [is_sparse_layer(step_2, i) for i in range(3)] == [False, True, False]
    # config.json spells the expert count `num_experts`; transformers 5 re-serializes it.
    as_released = {**step_2.hf_config, "num_experts": 4}
    del as_released["num_local_experts"]
    assert is_sparse_layer(ArchConfig.from_hf_dict(as_released), 1)
    assert not is_sparse_layer(ArchConfig.from_hf_dict({**as_released, "num_experts": 0}), 1)
