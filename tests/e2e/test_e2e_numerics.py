"""The served default model computes what `transformers` computes on the same dequantized
weights: prompt log-probabilities (completions with echo, as evaluation harnesses score text)
and greedy continuations.

With `--quantization none` (dense fp32: the reference numerics) the match is tight. The default
kernels (the checkpoint's 4/8-bit weights, int16 activations) stay within the bound issue 13 sets
for them; `--quantization fast` (int8 activations into 4-bit layers) within a looser one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.e2e.helpers import MAX_NUM_BATCHED_TOKENS, MODEL, PARAGRAPH, SERVER_ARGS, ServerProcess, running_server

pytestmark = pytest.mark.slow

MAX_MEAN_ABS_DIFF_NATS = 0.05  # dense fp32 against transformers' fp32
MAX_MEAN_ABS_DIFF_NATS_FAST_KERNELS = 0.05  # the default kernels (issue 13's bound; measured 0.001)
MAX_MEAN_ABS_DIFF_NATS_INT8_ACTIVATIONS = 0.25  # `--quantization fast` (llama.cpp's numerics; measured 0.13)


@pytest.fixture(scope="module")
def reference_server(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`firebox serve --quantization none`: dense fp32 linears, the reference numerics."""
    with running_server(tmp_path_factory.mktemp("reference_server"), *SERVER_ARGS, "--quantization", "none") as server:
        yield server


@pytest.fixture(scope="module")
def reference_model(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """transformers' Llama over the GGUF file (it dequantizes the weights itself), fp32."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("reference_gguf")
    (folder / default_gguf.name).symlink_to(default_gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=default_gguf.name, dtype=torch.float32)
    return model.eval()


def reference_logprobs(model: Any, token_ids: list[int]) -> torch.Tensor:
    """log p(token i | tokens < i) for i >= 1, and the best log-probability at each of those positions."""
    ids = torch.tensor([token_ids])  # [1, num_tokens]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)  # [num_tokens - 1, vocab]
    return torch.stack([logprobs.gather(1, ids[0, 1:, None])[:, 0], logprobs.max(dim=-1).values])


def _prompt_logprob_diffs(server: ServerProcess, reference_model: Any) -> tuple[float, float]:
    """Mean |ours - transformers| over PARAGRAPH's prompt log-probabilities: of the prompt's own
    tokens, and of the best token at each position."""
    token_ids = server.tokenize(prompt=PARAGRAPH)
    assert 80 <= len(token_ids) <= 120 and len(token_ids) > MAX_NUM_BATCHED_TOKENS  # prefilled in chunks
    response = server.openai().completions.create(model=MODEL, prompt=PARAGRAPH, max_tokens=0, echo=True, logprobs=1)
    choice = response.choices[0]
    assert choice.text == PARAGRAPH and response.usage.completion_tokens == 0
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == PARAGRAPH and len(logprobs.tokens) == len(token_ids)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    chosen, best = reference_logprobs(reference_model, token_ids)
    ours = torch.tensor(logprobs.token_logprobs[1:])
    ours_best = torch.tensor([max(top.values()) for top in logprobs.top_logprobs[1:]])  # logprobs=1: the best one
    diffs = (ours - chosen).abs().mean().item(), (ours_best - best).abs().mean().item()
    print(f"\nprompt logprobs vs transformers over {len(token_ids)} tokens: mean |diff| = {diffs[0]:.3e} nats")
    return diffs


def test_prompt_logprobs_match_transformers(reference_server, reference_model) -> None:
    chosen, best = _prompt_logprob_diffs(reference_server, reference_model)
    assert chosen < MAX_MEAN_ABS_DIFF_NATS and best < MAX_MEAN_ABS_DIFF_NATS


def test_default_kernels_keep_prompt_logprobs_close_to_transformers(server, reference_model) -> None:
    chosen, best = _prompt_logprob_diffs(server, reference_model)
    assert chosen < MAX_MEAN_ABS_DIFF_NATS_FAST_KERNELS and best < MAX_MEAN_ABS_DIFF_NATS_FAST_KERNELS


def test_fast_kernels_stay_near_transformers(default_gguf: Path, reference_model, tmp_path) -> None:
    """`--quantization fast` trades some accuracy (int8 activations into 4-bit layers), boundedly."""
    with running_server(tmp_path, *SERVER_ARGS, "--quantization", "fast") as server:
        chosen, best = _prompt_logprob_diffs(server, reference_model)
    assert chosen < MAX_MEAN_ABS_DIFF_NATS_INT8_ACTIVATIONS and best < MAX_MEAN_ABS_DIFF_NATS_INT8_ACTIVATIONS


def test_greedy_continuation_matches_transformers(reference_server, reference_model) -> None:
    prompt = PARAGRAPH.split(". ")[0] + "."
    token_ids = reference_server.tokenize(prompt=prompt)
    response = reference_server.openai().completions.create(
        model=MODEL, prompt=prompt, max_tokens=20, temperature=0, extra_body={"return_token_ids": True}
    )
    choice = response.choices[0]
    assert choice.prompt_token_ids == token_ids
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        expected = reference_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False
        )[0, len(token_ids) :].tolist()
    assert len(expected) == 20  # no EOS within 20 tokens: the comparison covers all of them
    assert choice.token_ids == expected
    assert choice.finish_reason == "length" and response.usage.completion_tokens == 20
