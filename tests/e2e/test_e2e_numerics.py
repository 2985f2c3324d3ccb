"""The served default model computes what `transformers` computes on the same dequantized
weights: prompt log-probabilities (completions with echo, as evaluation harnesses score text)
and greedy continuations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.e2e.helpers import MAX_NUM_BATCHED_TOKENS, MODEL, PARAGRAPH

pytestmark = pytest.mark.slow

MAX_MEAN_ABS_DIFF_NATS = 0.05


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


def test_prompt_logprobs_match_transformers(server, client, reference_model) -> None:
    token_ids = server.tokenize(prompt=PARAGRAPH)
    assert 80 <= len(token_ids) <= 120 and len(token_ids) > MAX_NUM_BATCHED_TOKENS  # prefilled in chunks
    response = client.completions.create(model=MODEL, prompt=PARAGRAPH, max_tokens=0, echo=True, logprobs=1)
    choice = response.choices[0]
    assert choice.text == PARAGRAPH and response.usage.completion_tokens == 0
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == PARAGRAPH and len(logprobs.tokens) == len(token_ids)
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    chosen, best = reference_logprobs(reference_model, token_ids)
    ours = torch.tensor(logprobs.token_logprobs[1:])
    mean_abs_diff = (ours - chosen).abs().mean().item()
    print(f"\nprompt logprobs vs transformers over {len(token_ids)} tokens: mean |diff| = {mean_abs_diff:.3e} nats")
    assert mean_abs_diff < MAX_MEAN_ABS_DIFF_NATS
    ours_best = torch.tensor([max(top.values()) for top in logprobs.top_logprobs[1:]])  # logprobs=1: the best one
    assert (ours_best - best).abs().mean().item() < MAX_MEAN_ABS_DIFF_NATS


def test_greedy_continuation_matches_transformers(server, client, reference_model) -> None:
    prompt = PARAGRAPH.split(". ")[0] + "."
    token_ids = server.tokenize(prompt=prompt)
    response = client.completions.create(
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
