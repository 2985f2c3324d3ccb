"""Shared layers alone: rope scaling against transformers' frequencies, MoE against a dense loop."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from firebox.models.layers.moe import StackedExperts, select_experts
from firebox.models.layers.rotary import RotaryEmbedding, apply_rotary, rope_inv_freq

HEAD_DIM, MAX_POS = 32, 256
ROPE_CASES = {
    "linear": {"factor": 3.0},
    "llama3": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 64},
    "yarn-mscale": {
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "mscale": 0.707,
        "mscale_all_dim": 0.707 * 2,
        "beta_fast": 24,
        "truncate": False,
    },
}


@pytest.mark.parametrize("case", list(ROPE_CASES))
def test_rope_scaling_matches_transformers(case: str) -> None:
    rope_type = case.split("-")[0]
    params = {"rope_type": rope_type, "rope_theta": 10000.0, **ROPE_CASES[case]}
    config = LlamaConfig(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        max_position_embeddings=MAX_POS,
        rope_parameters=params,
    )
    ref_inv_freq, ref_factor = ROPE_INIT_FUNCTIONS[rope_type](config, device=None)
    inv_freq, factor = rope_inv_freq(HEAD_DIM, 10000.0, params, MAX_POS)
    torch.testing.assert_close(inv_freq, ref_inv_freq, rtol=1e-6, atol=0)
    assert factor == pytest.approx(ref_factor)
    assert not torch.allclose(inv_freq, rope_inv_freq(HEAD_DIM, 10000.0, None, MAX_POS)[0])


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope", "mystery"])
def test_unsupported_rope_scaling_is_a_clear_error(rope_type: str) -> None:
    with pytest.raises(
        ValueError, match=r"unsupported rope scaling type .*supported: default, linear, llama3, yarn"
    ):
        RotaryEmbedding(HEAD_DIM, MAX_POS, 10000.0, {"rope_type": rope_type, "factor": 2.0})


def test_legacy_type_key_is_understood() -> None:
    legacy = rope_inv_freq(HEAD_DIM, 10000.0, {"type": "linear", "factor": 2.0}, MAX_POS)[0]
    torch.testing.assert_close(legacy, rope_inv_freq(HEAD_DIM, 10000.0, None, MAX_POS)[0] / 2.0)


def test_rotary_at_position_zero_is_identity_and_preserves_norm() -> None:
    rope = RotaryEmbedding(HEAD_DIM, MAX_POS, 10000.0)
    x = torch.randn(3, 2, HEAD_DIM)
    cos_sin = rope.lookup(torch.tensor([0, 5, 200]), torch.float32)
    out = apply_rotary(x, cos_sin)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(out[1], x[1])


def test_grouped_experts_match_dense_reference() -> None:
    torch.manual_seed(0)
    num_experts, hidden, inter, top_k, n = 5, 16, 8, 2, 11
    experts = StackedExperts(num_experts, hidden, inter, torch.float32)
    experts.gate_up_proj.copy_(torch.randn_like(experts.gate_up_proj))
    experts.down_proj.copy_(torch.randn_like(experts.down_proj))
    x = torch.randn(n, hidden)
    weights, ids = select_experts(torch.randn(n, num_experts), top_k, renormalize=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(n))
    expected = torch.zeros(n, hidden)
    for t in range(n):
        for w, e in zip(weights[t], ids[t], strict=True):
            gate, up = (experts.gate_up_proj[e] @ x[t]).chunk(2)
            expected[t] += w * (experts.down_proj[e] @ (torch.nn.functional.silu(gate) * up))
    torch.testing.assert_close(experts(x, weights, ids), expected, rtol=1e-5, atol=1e-5)
