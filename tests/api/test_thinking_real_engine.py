"""A tiny random Qwen3 (an HF folder: config.json, tokenizer.json with `<think>` / `</think>` as
added tokens, a chat template that opens the thinking unless `enable_thinking` is false) served
by the real engine: the template renders as the request asks, and the output parsing puts what
the model writes after an opened thinking into `reasoning_content`. Random weights think nothing
in particular, so the tests assert on the prompt tokens and on where the text goes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from tests.conftest import serve_in_thread

MODEL = "accounts/fireworks/models/tiny-qwen3"
ASK = [{"role": "user", "content": "What is two plus two?"}]
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 320,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
}  # fmt: skip
# QwQ / Qwen3-Thinking style, with Qwen3's switch: the prompt opens the thinking unless told not to
TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


def _write_folder(folder: Path) -> None:
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(["user assistant what is two plus two? the answer is four."] * 10, trainer)
    tokenizer.add_tokens(["<think>", "</think>"])  # added, not special: Qwen3 keeps them in the text
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps(CONFIG))


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """(an `openai` client of a live server, its engine) over the tiny Qwen3 with random weights."""
    import openai

    from firebox.api.app import create_app
    from firebox.config import EngineOptions, engine_config
    from firebox.engine.launch import start_engine
    from firebox.serving.registry import ModelRegistry

    folder = tmp_path_factory.mktemp("tiny-qwen3")
    _write_folder(folder)
    options = EngineOptions(
        source=f"dummy:{folder}", name=MODEL, device="cpu", num_threads=1, quantization="none",
        attention_backend="torch", num_kv_blocks=64, max_num_seqs=4, max_model_len=256,
    )  # fmt: skip
    engine = start_engine(engine_config(options))
    registry = ModelRegistry()
    registry.add(MODEL, engine)
    try:
        with serve_in_thread(create_app(registry)) as url:
            yield openai.OpenAI(base_url=f"{url}/inference/v1", api_key="none", max_retries=0), engine
    finally:
        engine.shutdown()


def _ask(client: Any, engine: Any, **extra: Any) -> Any:
    close_id = engine.tokenizer.token_to_id("</think>")
    return client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, temperature=0.0,
        extra_body={"raw_output": True, "return_token_ids": True, "ignore_eos": True,
                    "logit_bias": {str(close_id): -100}, **extra},
    )  # fmt: skip


def test_the_template_opens_the_thinking_and_the_output_is_reasoning(tiny_qwen3) -> None:
    client, engine = tiny_qwen3
    response = _ask(client, engine)
    prompt_ids = response.model_extra["prompt_token_ids"]
    assert prompt_ids[-2:] == engine.tokenizer.encode("<think>\n")  # the added token, then the newline
    raw = response.choices[0].model_extra["raw_output"]
    message = response.choices[0].message
    assert message.model_extra["reasoning_content"] == raw["completion"].strip() != ""
    assert not message.content
    details = response.usage.completion_tokens_details
    assert details.reasoning_tokens == response.usage.completion_tokens == 8


@pytest.mark.parametrize("off", [{"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}])
def test_thinking_off_renders_enable_thinking_false(tiny_qwen3, off) -> None:
    client, engine = tiny_qwen3
    response = _ask(client, engine, **off)
    closed = engine.tokenizer.encode("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert response.model_extra["prompt_token_ids"][-len(closed) :] == closed
    raw = response.choices[0].model_extra["raw_output"]
    message = response.choices[0].message
    assert message.content == raw["completion"] and "reasoning_content" not in (message.model_extra or {})
    assert response.usage.completion_tokens_details.reasoning_tokens == 0
