"""The runner says at load which path a model's layers take (native stack or Python layers) and why."""

from __future__ import annotations

import logging

import pytest
from transformers import LlamaConfig, Qwen3Config

from firebox.config import CacheConfig, DeviceConfig, ModelConfig
from firebox.engine.runner.model_runner import ModelRunner
from firebox.kernels import load_native
from firebox.loader.arch_config import ArchConfig
from firebox.loader.source import ModelSource
from tests.models.helpers import tiny

pytestmark = pytest.mark.skipif(not load_native(), reason="the native kernels did not build here")


def _load(hf_config: object, architecture: str, attention_backend: str, caplog: pytest.LogCaptureFixture) -> str:
    """Load dummy weights for the config; the runner's one line about its layer stack."""
    arch = ArchConfig.from_hf_dict({**hf_config.to_dict(), "architectures": [architecture]})
    source = ModelSource(
        arch, None, {}, (), arch.max_position_embeddings, is_dummy=True, description="tiny"  # type: ignore[arg-type]
    )
    device = DeviceConfig(device="cpu", attention_backend=attention_backend)
    with caplog.at_level(logging.INFO, logger="firebox.engine.runner.model_runner"):
        ModelRunner(ModelConfig(), CacheConfig(num_blocks=4), device, source)
    lines = [r.getMessage() for r in caplog.records if " runs on the " in r.getMessage()]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_plain_llama_runs_on_the_native_stack(caplog: pytest.LogCaptureFixture) -> None:
    line = _load(LlamaConfig(**tiny()), "LlamaForCausalLM", "auto", caplog)
    assert line.startswith("LlamaForCausalLM runs on the native decoder stack")


def test_the_torch_attention_backend_is_the_reported_reason(caplog: pytest.LogCaptureFixture) -> None:
    line = _load(LlamaConfig(**tiny()), "LlamaForCausalLM", "torch", caplog)
    assert line.startswith("LlamaForCausalLM runs on the Python layers")
    assert "the attention backend is torch" in line


def test_a_failed_kernel_build_is_the_reported_reason(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("firebox.models.native_stack.native_build_failed", lambda: True)
    line = _load(LlamaConfig(**tiny()), "LlamaForCausalLM", "auto", caplog)
    assert line.startswith("LlamaForCausalLM runs on the Python layers")
    assert line.endswith("(no native decoder stack: the native kernels did not build)")


def test_qk_norm_is_the_reported_reason(caplog: pytest.LogCaptureFixture) -> None:
    line = _load(Qwen3Config(**tiny(head_dim=16)), "Qwen3ForCausalLM", "auto", caplog)
    assert line.startswith("Qwen3ForCausalLM runs on the Python layers")
    assert "QK-norm" in line
