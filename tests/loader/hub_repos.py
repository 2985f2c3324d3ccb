"""Repositories for the fake hub (tests/loader/fake_hub.py), and the environment that points
huggingface_hub at it: a tiny sharded safetensors Llama, a GGUF repository with two quantization
tags, a model of an architecture firebox does not serve, each with files firebox must not fetch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save_file

from tests.loader.fake_hub import FakeHub
from tests.loader.loader_builders import TINY_LLAMA_CONFIG, save_tiny_tokenizer, write_tiny_llama

LLAMA = "tiny-org/tiny-llama"
GGUF = "tiny-org/tiny-llama-gguf"
GATED = "tiny-org/gated-gguf"
UNSUPPORTED = "tiny-org/tiny-gpt2"
NOT_FETCHED = ("pytorch_model.bin", "README.md", "onnx/model.onnx", "consolidated.safetensors", "tokenizer.model")
LLAMA_FILES = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors"}  # fmt: skip
Weights = dict[str, np.ndarray]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _write_junk(folder: Path, names: tuple[str, ...]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not for firebox " * 64)


def llama_weights(config: dict) -> dict[str, np.ndarray]:
    """Random float32 weights of a Llama of `config`, under Hugging Face names."""
    rng = np.random.default_rng(0)
    hidden, ffn, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv_rows = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}  # fmt: skip
    layer_shapes = {"input_layernorm": (hidden,), "post_attention_layernorm": (hidden,),
                    "self_attn.q_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
                    "self_attn.k_proj": (kv_rows, hidden), "self_attn.v_proj": (kv_rows, hidden),
                    "mlp.gate_proj": (ffn, hidden), "mlp.up_proj": (ffn, hidden),
                    "mlp.down_proj": (hidden, ffn)}  # fmt: skip
    for i in range(config["num_hidden_layers"]):
        shapes |= {f"model.layers.{i}.{name}.weight": shape for name, shape in layer_shapes.items()}
    return {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape in shapes.items()}


def write_llama_repo(folder: Path) -> dict[str, np.ndarray]:
    """A safetensors Llama in two shards (and files of other formats); returns its weights."""
    folder.mkdir(parents=True)
    tokenizer = save_tiny_tokenizer(folder)
    config = dict(TINY_LLAMA_CONFIG, vocab_size=max(TINY_LLAMA_CONFIG["vocab_size"], tokenizer.get_vocab_size()))
    _write_json(folder / "config.json", config)
    _write_json(folder / "tokenizer_config.json", {"eos_token": "<|im_end|>", "chat_template": TEMPLATE})
    _write_json(folder / "generation_config.json", {"temperature": 0.6, "eos_token_id": 3})
    weights = llama_weights(config)
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    shards: dict[str, dict[str, np.ndarray]] = {first: {}, second: {}}
    for name, array in weights.items():
        shards[first if ".layers.0." in name else second][name] = array
    for shard, tensors in shards.items():
        save_file(tensors, str(folder / shard))
    weight_map = {name: shard for shard, tensors in shards.items() for name in tensors}
    _write_json(folder / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    _write_junk(folder, NOT_FETCHED)
    return weights


def write_gguf_repo(folder: Path) -> None:
    """Two GGUF files told apart by their quantization tags, and a README."""
    folder.mkdir(parents=True)
    write_tiny_llama(folder / "tiny-llama-Q8_0.gguf")
    shutil.copy(folder / "tiny-llama-Q8_0.gguf", folder / "tiny-llama-Q4_K_M.gguf")
    _write_junk(folder, ("README.md",))


def write_unsupported_repo(folder: Path) -> None:
    folder.mkdir(parents=True)
    _write_json(folder / "config.json", {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    save_file({"wte.weight": np.zeros((4, 4), dtype=np.float32)}, str(folder / "model.safetensors"))


def fake_hub_with_repos(root: Path) -> tuple[FakeHub, dict[str, np.ndarray]]:
    hub = FakeHub()
    weights = write_llama_repo(root / "llama")
    write_gguf_repo(root / "gguf")
    write_gguf_repo(root / "gated")
    write_unsupported_repo(root / "gpt2")
    hub.add(LLAMA, root / "llama")
    hub.add(GGUF, root / "gguf")
    hub.add(GATED, root / "gated", gated=True)
    hub.add(UNSUPPORTED, root / "gpt2")
    return hub, weights


@contextmanager
def serving_fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, Weights]]:
    """The repositories above on a running fake hub, huggingface_hub pointed at it (the fixture of
    the test_hub_* modules); yields the hub and the safetensors Llama's weights."""
    fake_hub, weights = fake_hub_with_repos(tmp_path / "repos")
    with hub_environment(fake_hub, tmp_path / "hf_home", monkeypatch):
        yield fake_hub, weights


@contextmanager
def hub_environment(hub: FakeHub, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """huggingface_hub pointed at `hub` with its cache under `home`: the environment for
    subprocesses, and the constants it read at import time for this one."""
    hub.start()
    cache = home / "hub"
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_ENDPOINT": hub.url}.items():
        monkeypatch.setenv(name, str(value))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    try:
        yield
    finally:
        hub.stop()
