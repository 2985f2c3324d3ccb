"""Llama, Mistral and Qwen2 against transformers, through the paged KV cache."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tests.models import helpers as h

TINY = h.tiny(intermediate_size=128)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}

VARIANTS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**TINY)),
    "llama3-rope-tied": (
        LlamaForCausalLM,
        LlamaConfig(**TINY, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
    ),
    "llama-linear-rope-bias": (
        LlamaForCausalLM,
        LlamaConfig(
            **TINY,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
            attention_bias=True,
            mlp_bias=True,
        ),
    ),
    "mistral": (MistralForCausalLM, MistralConfig(**TINY)),
    "mistral-window": (MistralForCausalLM, MistralConfig(**TINY, sliding_window=5)),  # PROMPT is 20 tokens
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**{**TINY, "num_hidden_layers": 3})),
    "qwen2-window-above-layer-1": (  # layers 1 and 2 slide a 6-token window, layer 0 sees everything
        Qwen2ForCausalLM,
        Qwen2Config(**{**TINY, "num_hidden_layers": 3}, use_sliding_window=True, sliding_window=6, max_window_layers=1),
    ),
}


def _model_pair(name: str):
    hf = h.make_hf_model(*VARIANTS[name])
    return hf, h.build_ours(hf)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_prompt_logits_match_transformers(name: str) -> None:
    h.check_prompt_matches_transformers(h.make_hf_model(*VARIANTS[name]))


def test_chunked_prefill_then_decode_matches_full_sequence() -> None:
    hf, ours = _model_pair("llama3-rope-tied")
    tokens = h.PROMPT + [33, 77, 5, 110]  # 20 prompt tokens, then 4 decode steps
    logits = h.PagedRunner(ours).run_chunks("seq", tokens, [7, 5, 8, 1, 1, 1, 1])
    h.assert_logits_close(logits, h.hf_logits(hf, tokens))


@pytest.mark.parametrize("name", ["mistral-window", "qwen2-window-above-layer-1"])
def test_sliding_window_holds_across_chunks_and_decodes(name: str) -> None:
    hf, ours = _model_pair(name)
    tokens = h.PROMPT + [33, 77, 5, 110]
    logits = h.PagedRunner(ours).run_chunks("seq", tokens, [3, 9, 8, 1, 1, 1, 1])  # chunks longer than the window
    ref = h.hf_logits(hf, tokens)
    h.assert_logits_close(logits, ref)
    unwindowed = h.make_hf_model(*VARIANTS[name.split("-")[0]])  # the same weights, full attention
    assert (h.hf_logits(unwindowed, tokens) - ref).abs().max() > 0.1, "the window should change the logits"


def test_decodes_and_prefills_batched_together_match_each_alone() -> None:
    hf, ours = _model_pair("llama")
    runner = h.PagedRunner(ours)
    short, long_ = h.PROMPT[:9], h.PROMPT
    runner.step({"a": short, "b": long_[:14], "c": h.OTHER_PROMPT[:6]})
    # One step: two decodes with different context lengths, a continued chunk, a fresh prompt.
    mixed = runner.step({"c": h.OTHER_PROMPT[6:], "d": h.OTHER_PROMPT, "a": [61], "b": [62]})
    h.assert_logits_close(mixed["a"], h.hf_logits(hf, short + [61])[-1:])
    h.assert_logits_close(mixed["b"], h.hf_logits(hf, long_[:14] + [62])[-1:])
    h.assert_logits_close(mixed["c"], h.hf_logits(hf, h.OTHER_PROMPT)[6:])
    h.assert_logits_close(mixed["d"], h.hf_logits(hf, h.OTHER_PROMPT))
    alone = h.PagedRunner(ours, seed=1).run_chunks("a", short + [61], [9, 1])
    torch.testing.assert_close(mixed["a"], alone[-1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed["d"], h.paged_logits(ours, h.OTHER_PROMPT), atol=1e-5, rtol=0)


def test_bf16_model_roughly_agrees_with_fp32_reference() -> None:
    hf, _ = _model_pair("llama3-rope-tied")
    ours = h.build_ours(hf, dtype=torch.bfloat16)
    assert next(ours.parameters()).dtype == torch.bfloat16
    logits = h.paged_logits(ours, h.PROMPT)
    assert logits.dtype == torch.float32
    ref = h.hf_logits(hf, h.PROMPT)
    cosine = torch.nn.functional.cosine_similarity(logits, ref, dim=-1)
    assert cosine.min() > 0.99
    assert (logits.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
