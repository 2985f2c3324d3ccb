"""Qwen3 (q/k norm, head_dim independent of hidden / heads) against transformers."""

from __future__ import annotations

import pytest
from transformers import Qwen3Config, Qwen3ForCausalLM

from tests.models import helpers as h

TINY = h.tiny(vocab_size=160, head_dim=32)  # head_dim != hidden_size / num_attention_heads = 16
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 16}

VARIANTS = {
    "qwen3": Qwen3Config(**TINY),
    "qwen3-bias-tied": Qwen3Config(**TINY, attention_bias=True, tie_word_embeddings=True),
    "qwen3-yarn": Qwen3Config(**TINY, rope_parameters=YARN_ROPE),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_prompt_logits_match_transformers(name: str) -> None:
    h.check_prompt_matches_transformers(h.make_hf_model(Qwen3ForCausalLM, VARIANTS[name]))


def test_qk_norm_in_chunked_prefill_and_decode() -> None:
    hf = h.make_hf_model(Qwen3ForCausalLM, VARIANTS["qwen3"])
    ours = h.build_ours(hf)
    assert ours.model.layers[0].self_attn.q_norm is not None
    tokens = h.PROMPT + [3, 4]
    logits = h.PagedRunner(ours).run_chunks("s", tokens, [11, 9, 1, 1])
    h.assert_logits_close(logits, h.hf_logits(hf, tokens))
