"""Quantized layers packed while the weights stream in (PackingSink) are the same bits as layers
packed from fully loaded float weights, fused parts (q|k|v, gate|up) included."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from firebox.engine.runner.weight_kernels import PackingSink, install_weight_kernels
from firebox.kernels import load_native
from firebox.models.layers.linear import Linear
from firebox.models.layers.quant import GroupKernel
from tests.models.helpers import arch_config_of, make_hf_model, tiny

pytestmark = pytest.mark.skipif(not load_native(), reason="the native kernels did not build here")


def _packed_layers(hf: torch.nn.Module, quantization: str, streamed: bool) -> dict[str, GroupKernel]:
    from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
    from firebox.models.registry import get_model_class

    config = arch_config_of(hf)
    model = get_model_class(config.architecture)(config, TorchAttentionBackend())
    sink = PackingSink(model, quantization, source_bits=4) if streamed else None
    model.load_weights(hf.state_dict().items(), sink=sink)
    install_weight_kernels(model, quantization, source_bits=4, sink=sink)
    return {name: m.kernel for name, m in model.named_modules() if isinstance(m, Linear)}


@pytest.mark.parametrize("quantization", ["auto", "fast", "int8"])
def test_streamed_packing_equals_packing_after_load(quantization: str) -> None:
    hf = make_hf_model(LlamaForCausalLM, LlamaConfig(**tiny(tie_word_embeddings=False)))
    streamed, loaded = _packed_layers(hf, quantization, True), _packed_layers(hf, quantization, False)
    assert streamed.keys() == loaded.keys() and any("qkv_proj" in name for name in streamed)
    for name, kernel in streamed.items():
        assert isinstance(kernel, GroupKernel), name
        for field in ("packed", "scale", "low") if hasattr(kernel.weight, "low") else ("packed", "scale"):
            assert torch.equal(getattr(kernel.weight, field), getattr(loaded[name].weight, field)), (name, field)
        assert kernel.weight.out_features == loaded[name].weight.out_features
        if hasattr(kernel.weight, "low"):  # 4-bit: int8 activations in `fast` only
            expected_bits = 8 if quantization == "fast" else 16
            assert kernel.weight.activation_bits == loaded[name].weight.activation_bits == expected_bits, name


def test_the_sink_takes_every_tensor_of_the_packed_layers() -> None:
    hf = make_hf_model(LlamaForCausalLM, LlamaConfig(**tiny(tie_word_embeddings=False)))
    config = arch_config_of(hf)
    from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
    from firebox.models.registry import get_model_class

    model = get_model_class(config.architecture)(config, TorchAttentionBackend())
    sink = PackingSink(model, "auto", source_bits=4)
    model.load_weights(hf.state_dict().items(), sink=sink)
    layers = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    assert sorted(sink.parts) == sorted(f"{name}.weight" for name in layers)
