"""Quantized layers packed while the weights stream in (PackingSink) are the same bits as layers
packed from fully loaded float weights, fused parts (q|k|v, gate|up) included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants
from transformers import LlamaConfig, LlamaForCausalLM

from firebox.engine.runner.weight_kernels import PackingSink, install_weight_kernels
from firebox.kernels import load_native
from firebox.models.layers.linear import Linear
from firebox.loader.quantized import NATIVE_BLOCK_TYPES, Q4_GRID_TYPES, QuantizedTensor
from firebox.models.layers.quant import GroupKernel, pack_q4_blocks, pack_q8_blocks, quantize_q4, quantize_q8
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


# Where a K-quant block keeps its fp16 scales (the gguf package cannot quantize these types)
_K_QUANT_SCALES = {GGMLQuantizationType.Q4_K: (0, 2), GGMLQuantizationType.Q5_K: (0, 2), GGMLQuantizationType.Q6_K: (208,)}


def _gguf_matrix(qtype: GGMLQuantizationType, rows: int, cols: int, rng: np.random.Generator) -> QuantizedTensor:
    """A [rows, cols] GGUF matrix of `qtype`: quantized by the gguf package where it can, else
    (K-quants) random blocks with finite fp16 scales, as tests/loader/test_dequant.py makes them."""
    if qtype in _K_QUANT_SCALES:
        _, type_size = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(rows * cols // 256, type_size), dtype=np.uint8)
        for offset in _K_QUANT_SCALES[qtype]:  # d (and dmin)
            halves = rng.uniform(0.001, 0.05, size=len(blocks)).astype(np.float16)
            blocks[:, offset : offset + 2] = halves.view(np.uint8).reshape(-1, 2)
        raw = blocks.reshape(-1)
    else:
        raw = quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype).view(np.uint8).reshape(-1)
    return QuantizedTensor(torch.from_numpy(raw.copy()), qtype, torch.Size((rows, cols)))


@pytest.mark.parametrize("qtype", sorted(NATIVE_BLOCK_TYPES), ids=lambda t: t.name)
def test_gguf_blocks_pack_as_their_dequantized_matrix_does(qtype: GGMLQuantizationType) -> None:
    """Packing from blocks (a row decoded at a time, no float copy of the matrix) gives the bits
    that packing the dequantized matrix gives: q8 always, q4 for every type that is not already a
    q4 grid (those copy their own levels; tested below); rows reorder as the rope unpermute asks."""
    rng = np.random.default_rng(100 + int(qtype))
    rows, cols = 40, 512  # 40 rows: a zero-padded last column block
    for row_order in (None, torch.from_numpy(rng.permutation(rows))):
        tensor = dataclasses.replace(_gguf_matrix(qtype, rows, cols, rng), row_order=row_order)
        weight = tensor.dense()
        packed_q8, expected_q8 = pack_q8_blocks(tensor), quantize_q8(weight)
        assert packed_q8.out_features == rows
        assert torch.equal(packed_q8.packed, expected_q8.packed) and torch.equal(packed_q8.scale, expected_q8.scale)
        if qtype not in Q4_GRID_TYPES:
            packed_q4, expected_q4 = pack_q4_blocks(tensor), quantize_q4(weight)
            for field in ("packed", "scale", "low"):
                assert torch.equal(getattr(packed_q4, field), getattr(expected_q4, field)), field


def test_gguf_block_packing_refuses_a_type_it_cannot_decode() -> None:
    tensor = QuantizedTensor(torch.zeros(32 * 64 * 2, dtype=torch.uint8), GGMLQuantizationType.F16, torch.Size((32, 64)))
    with pytest.raises(RuntimeError, match="no native decoder"):
        pack_q8_blocks(tensor)


@pytest.mark.parametrize("qtype", sorted(Q4_GRID_TYPES), ids=lambda t: t.name)
def test_gguf_4bit_blocks_pack_without_a_float_pass(qtype: GGMLQuantizationType) -> None:
    """Packed from its blocks, a 4-bit matrix multiplies as its dequantized values do, within the
    activations' int16 rounding and the fp16 rounding of its scales and offsets (exact for Q4_0 and
    Q4_1, under 2^-11 of d * sc and dmin * m for Q4_K); rows reorder as the rope unpermute asks."""
    rng = np.random.default_rng(int(qtype))
    rows, cols = 40, 512  # 40 rows: a zero-padded last column block
    order = torch.from_numpy(rng.permutation(rows))
    for row_order in (None, order):
        tensor = dataclasses.replace(_gguf_matrix(qtype, rows, cols, rng), row_order=row_order)
        weight = tensor.dense()
        x = torch.from_numpy(rng.standard_normal((3, cols)).astype(np.float32))
        got = pack_q4_blocks(tensor).matmul(x)
        groups = weight.view(rows, -1, 32)
        levels = groups - groups.amin(-1, keepdim=True)  # what x's rounding meets
        bound = x.abs().view(3, -1, 32).amax(-1) @ levels.abs().sum(-1).T / 65534
        bound += 2.0**-10 * (x.abs() @ weight.abs().T + x.abs() @ levels.abs().view(rows, -1).T) + 1e-5
        error = (got - x @ weight.T).abs()
        assert (error <= bound).all(), f"error {error.max():.2e}"
