"""Shared fixtures: the real default model is opened (and its transformers reference built) once
per session, because each costs seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from firebox.loader.quantized import dense
from firebox.loader.source import ModelSource, default_gguf_path, gguf_source


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    try:
        return default_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def default_source(default_gguf: Path) -> ModelSource:
    return gguf_source(default_gguf)


@pytest.fixture(scope="session")
def default_state_dict(default_source: ModelSource) -> dict[str, torch.Tensor]:
    return {name: dense(tensor) for name, tensor in default_source.weights()}  # 4-bit ones come as blocks


@pytest.fixture(scope="session")
def default_gguf_folder(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only a link to the default GGUF, as transformers' `gguf_file=` wants."""
    folder = tmp_path_factory.mktemp("default_gguf")
    (folder / default_gguf.name).symlink_to(default_gguf)
    return folder


@pytest.fixture(scope="session")
def reference_tokenizer(default_gguf_folder: Path, default_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_gguf_folder, gguf_file=default_gguf.name)


@pytest.fixture(scope="session")
def reference_state_dict(default_gguf_folder: Path, default_gguf: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(default_gguf_folder, gguf_file=default_gguf.name, dtype=torch.float32)
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}
