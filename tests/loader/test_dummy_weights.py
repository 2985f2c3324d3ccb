from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from firebox.config import ModelConfig
from firebox.loader.dummy import init_dummy_weights
from firebox.loader.source import load_source
from tests.loader.loader_builders import TINY_LLAMA_CONFIG, save_tiny_tokenizer


class _Block(torch.nn.Module):
    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        names = ["proj", "other"] if not swap else ["other", "proj"]
        for name in names:  # registration order differs with `swap`; names do not
            self.add_module(name, torch.nn.Linear(16, 8))
        self.input_layernorm = torch.nn.Module()
        self.input_layernorm.weight = torch.nn.Parameter(torch.zeros(16))


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_same_seed_same_values_whatever_the_order() -> None:
    a, b = _Block(), _Block(swap=True)
    init_dummy_weights(a, seed=3)
    init_dummy_weights(b, seed=3)
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[name], pb[name]) for name in pa)


def test_seeds_and_parameters_differ() -> None:
    a, b = _Block(), _Block()
    init_dummy_weights(a, seed=0)
    init_dummy_weights(b, seed=1)
    assert not torch.equal(a.proj.weight, b.proj.weight)
    assert not torch.equal(a.proj.weight, a.other.weight)


def test_values_are_small_and_norms_are_one() -> None:
    block = _Block()
    init_dummy_weights(block, seed=0)
    assert torch.equal(block.input_layernorm.weight, torch.ones(16))
    weight = block.proj.weight
    assert weight.abs().max() <= 0.02 and weight.std() > 0.005


def test_fills_in_place_and_keeps_dtype() -> None:
    linear = torch.nn.Linear(32, 32).to(torch.bfloat16)
    storage = linear.weight.data_ptr()
    init_dummy_weights(linear, seed=0)
    assert linear.weight.dtype == torch.bfloat16 and linear.weight.data_ptr() == storage


def test_meta_parameters_are_refused() -> None:
    with torch.device("meta"):
        linear = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="meta"):
        init_dummy_weights(linear, seed=0)


def _write_config(folder: Path, name: str = "config.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(TINY_LLAMA_CONFIG), encoding="utf-8")
    return path


@pytest.mark.slow
def test_dummy_source_without_tokenizer_uses_the_default_one(tmp_path: Path, default_gguf: Path) -> None:
    _write_config(tmp_path)
    source = load_source(ModelConfig(source=f"dummy:{tmp_path}"))
    assert source.is_dummy is True and list(source.weights()) == []
    assert source.arch.hidden_size == 64 and source.max_model_len == 512
    assert source.tokenizer.vocab_size == 49152 and source.eos_token_ids == (2,)
    assert source.description == f"dummy weights for {tmp_path / 'config.json'}"


def test_dummy_source_with_a_config_file_and_the_folders_tokenizer(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "big-model.json")
    save_tiny_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "chat_template": "T"}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "eos_token_id": 7}))
    source = load_source(ModelConfig(source=f"dummy:{config}"))
    assert source.is_dummy and source.tokenizer.chat_template == "T"
    assert source.generation_defaults == {"temperature": 0.3}
    assert source.eos_token_ids == (source.tokenizer.token_to_id("</s>"), 7)


def test_dummy_source_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config file"):
        load_source(ModelConfig(source=f"dummy:{tmp_path}"))
