"""Hugging Face folders: a tiny random transformers model saved with safetensors, plus a tokenizer
built with the `tokenizers` library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from firebox.config import ModelConfig
from firebox.loader.hf_folder import hf_tokenizer
from firebox.loader.source import load_source
from tests.loader.loader_builders import TINY_LLAMA_CONFIG, save_tiny_tokenizer

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _save_model(folder: Path, vocab_size: int, max_shard_size: str | None = None) -> dict[str, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        rope_theta=5000.0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    (folder / "generation_config.json").unlink(missing_ok=True)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = save_tiny_tokenizer(folder)
    state = _save_model(folder, tokenizer.get_vocab_size())
    _write_json(
        folder / "tokenizer_config.json",
        {
            "bos_token": {"content": "<s>", "lstrip": False},
            "eos_token": "<|im_end|>",
            "add_bos_token": True,
            "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": TEMPLATE}],
        },
    )
    _write_json(
        folder / "generation_config.json",
        {"temperature": 0.6, "top_p": 0.9, "top_k": None, "do_sample": True, "eos_token_id": [1, 3]},
    )
    return folder, state


def test_weights_names_values_and_dtypes(tiny_folder: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, state = tiny_folder
    calls: list[tuple[int, int]] = []
    source = load_source(ModelConfig(source=str(folder)), progress=lambda d, t: calls.append((d, t)))
    weights = dict(source.weights())
    assert sorted(weights) == sorted(state)
    for name, tensor in state.items():
        assert weights[name].dtype == torch.bfloat16 and torch.equal(weights[name], tensor), name
    assert calls[-1] == (len(state), len(state)) and len(calls) == len(state)
    assert source.is_dummy is False and source.description == f"safetensors {folder}"


def test_arch_generation_defaults_and_eos(tiny_folder: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, _ = tiny_folder
    source = load_source(ModelConfig(source=str(folder)))
    arch = source.arch
    assert arch.architecture == "LlamaForCausalLM"
    assert (arch.hidden_size, arch.num_hidden_layers) == (64, 2)
    assert (arch.num_attention_heads, arch.num_key_value_heads) == (4, 2)
    assert arch.head_dim == 16 and arch.rope_theta == 5000.0 and arch.tie_word_embeddings is False
    assert source.max_model_len == 256
    assert source.generation_defaults == {"temperature": 0.6, "top_p": 0.9}
    assert source.eos_token_ids == (3, 1)  # tokenizer EOS <|im_end|> first, then generation_config's


def test_tokenizer_specials_and_chat_template(tiny_folder: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, _ = tiny_folder
    tokenizer = load_source(ModelConfig(source=str(folder))).tokenizer
    assert tokenizer.chat_template == TEMPLATE  # the "default" entry of the list
    assert tokenizer.special.bos_token == "<s>" and tokenizer.bos_token_id == 0
    ids = tokenizer.encode("hello world", add_special_tokens=True)
    assert ids[0] == 0 and ids[1:] == tokenizer.encode("hello world")
    assert tokenizer.encode("<|im_start|>hello<|im_end|>")[0] == 2
    assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"


def test_chat_template_file_and_string_forms(tmp_path: Path) -> None:
    save_tiny_tokenizer(tmp_path)
    _write_json(tmp_path / "tokenizer_config.json", {"eos_token": "</s>", "chat_template": "FROM CONFIG"})
    assert hf_tokenizer(tmp_path).chat_template == "FROM CONFIG"
    (tmp_path / "chat_template.jinja").write_text("FROM FILE", encoding="utf-8")
    assert hf_tokenizer(tmp_path).chat_template == "FROM FILE"


def test_bos_flag_falls_back_to_the_post_processor(tmp_path: Path) -> None:
    save_tiny_tokenizer(tmp_path)  # its post-processor template is "<s> $A"
    _write_json(tmp_path / "tokenizer_config.json", {"bos_token": "<s>", "eos_token": "</s>"})
    assert hf_tokenizer(tmp_path).special.add_bos_token is True
    _write_json(tmp_path / "tokenizer_config.json", {"bos_token": "</s>", "eos_token": "</s>"})
    assert hf_tokenizer(tmp_path).special.add_bos_token is False


def test_sharded_checkpoint_and_no_generation_config(tmp_path: Path) -> None:
    tokenizer = save_tiny_tokenizer(tmp_path)
    state = _save_model(tmp_path, tokenizer.get_vocab_size(), max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    source = load_source(ModelConfig(source=str(tmp_path)))
    weights = dict(source.weights())
    assert sorted(weights) == sorted(state)
    assert all(torch.equal(weights[name], tensor) for name, tensor in state.items())
    assert source.generation_defaults == {} and source.eos_token_ids == ()  # no EOS configured anywhere


def test_missing_pieces_are_clear_errors(tmp_path: Path) -> None:
    _write_json(tmp_path / "config.json", TINY_LLAMA_CONFIG)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        hf_tokenizer(tmp_path)
    save_tiny_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="no safetensors weights"):
        load_source(ModelConfig(source=str(tmp_path)))
