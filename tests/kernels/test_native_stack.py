"""The native DecoderStack runs the same computation as the Python decoder layers.

Two copies of one tiny Llama run the same steps (fresh prompts, a chunk that continues a cached
context, decodes next to a prefill chunk) over the native paged backend: one through the Python
layers, one through `DecoderStack`. Both must give the same logits, with dense weights and with
the batch-adaptive quantized kernels (whose small-step path the stack re-implements), and for a
Mistral whose sliding window is shorter than the prompts.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from firebox.engine.runner.weight_kernels import install_weight_kernels
from firebox.kernels import load_native
from firebox.models.layer_stacks import StackTarget, choose_layer_stack
from tests.models.helpers import OTHER_PROMPT, PROMPT, PagedRunner, build_ours, hf_logits, make_hf_model, tiny

pytestmark = pytest.mark.skipif(not load_native(), reason="the native kernels did not build here")

STEPS = [
    {"a": PROMPT[:9], "b": OTHER_PROMPT},  # two fresh prompts
    {"a": PROMPT[9:], "b": [7]},  # a chunk on a cached context next to a decode
    {"a": [3], "b": [50], "c": PROMPT[:2]},  # decodes next to a fresh two-token prompt
    {"a": [12], "b": [60], "c": [4]},  # decodes only
]


MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(**tiny())),
    "mistral-window-5": (MistralForCausalLM, MistralConfig(**tiny(), sliding_window=5)),
}


def _run(quantization: str, native: bool, model: str = "llama") -> list[dict[str, torch.Tensor]]:
    from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

    hf = make_hf_model(*MODELS[model])
    backend = CpuPagedAttentionBackend()
    model = build_ours(hf, backend=backend)
    install_weight_kernels(model, quantization, source_bits=4)
    runner = PagedRunner(model, backend=backend)
    if native:
        choice = choose_layer_stack(StackTarget(model, backend.name, runner.kv_caches, block_size=4))
        assert choice.name == "native", f"the stack should apply to a plain fp32 Llama on CPU: {choice.reason}"
        model.use_layer_stack(choice.stack)
    return [runner.step(chunks) for chunks in STEPS]


@pytest.mark.parametrize(
    ("quantization", "model"), [("none", "llama"), ("auto", "llama"), ("int8", "llama"), ("auto", "mistral-window-5")]
)
def test_the_native_stack_gives_the_python_layers_logits(quantization: str, model: str) -> None:
    python, native = _run(quantization, native=False, model=model), _run(quantization, native=True, model=model)
    for step_python, step_native in zip(python, native, strict=True):
        assert step_python.keys() == step_native.keys()
        for seq in step_python:
            torch.testing.assert_close(step_native[seq], step_python[seq], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", list(MODELS))
def test_the_native_stack_matches_transformers_on_dense_weights(model: str) -> None:
    hf = make_hf_model(*MODELS[model])
    logits = torch.cat([step["a"] for step in _run("none", native=True, model=model)[:2]])
    torch.testing.assert_close(logits, hf_logits(hf, PROMPT), rtol=1e-3, atol=1e-3)


def test_the_stack_declines_models_it_does_not_reproduce() -> None:
    from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

    hf = make_hf_model(LlamaForCausalLM, LlamaConfig(**tiny()))
    model = build_ours(hf, dtype=torch.bfloat16, backend=CpuPagedAttentionBackend())
    choice = choose_layer_stack(StackTarget(model, "native", PagedRunner(model).kv_caches, block_size=4))
    assert choice.name == "python"
    assert "bfloat16" in choice.reason
