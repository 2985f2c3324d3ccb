"""Every dequantizer, torch and native, against the `gguf` package's numpy reference (ggml's own
algorithm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from firebox.loader import dequant
from firebox.loader.dequant import decode_tensor, dequantize

Q = GGMLQuantizationType
QUANTIZABLE = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.BF16, Q.F16]
# K-quants have no numpy quantizer: random bytes, with each fp16 scale field set to a finite value
K_QUANT_HALF_OFFSETS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


@pytest.fixture(autouse=True, params=["torch", "native"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: through the vectorized torch dequantizers, and through the C++ ones
    (kernels/csrc/gguf_dequant.cpp) for the types they decode."""
    if request.param == "torch":
        monkeypatch.setattr(dequant, "has_native_op", lambda name: False)
    else:
        from firebox.kernels import load_native

        if not load_native():
            pytest.skip("the native kernels did not build here")
    return request.param


def _random_k_blocks(qtype: GGMLQuantizationType, num_blocks: int, rng: np.random.Generator) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(num_blocks, type_size), dtype=np.uint8)
    for offset in K_QUANT_HALF_OFFSETS[qtype]:
        scales = rng.uniform(-0.05, 0.05, size=num_blocks).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(num_blocks, 2)
    return blocks


def _ours(raw: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    return dequantize(torch.from_numpy(raw.reshape(-1).copy()), qtype).numpy()


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
def test_quantized_round_trip_matches_reference_bit_exactly(qtype: GGMLQuantizationType) -> None:
    rng = np.random.default_rng(int(qtype))
    values = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 3, size=(16, 1))).astype(np.float32)
    values[3, :32] = 0.0  # an all-zero block: scale 0
    raw = quants.quantize(values, qtype)
    reference = quants.dequantize(raw, qtype).reshape(-1)
    ours = _ours(raw.view(np.uint8), qtype)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference)
    assert np.abs(ours - values.reshape(-1)).max() <= 0.2 * np.abs(values).max()  # a dequantization at all


@pytest.mark.parametrize("qtype", list(K_QUANT_HALF_OFFSETS), ids=lambda t: t.name)
def test_k_quants_match_reference_bit_exactly(qtype: GGMLQuantizationType) -> None:
    blocks = _random_k_blocks(qtype, 64, np.random.default_rng(int(qtype)))
    reference = quants.dequantize(blocks, qtype).reshape(-1)
    assert np.isfinite(reference).all()
    np.testing.assert_array_equal(_ours(blocks, qtype), reference)


def test_f32_passes_through() -> None:
    values = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(_ours(values.view(np.uint8), Q.F32), values)


def test_chunk_boundaries_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    raw = quants.quantize(rng.standard_normal((10, 96)).astype(np.float32), Q.Q4_1)
    whole = _ours(raw, Q.Q4_1)
    monkeypatch.setattr(dequant, "_CHUNK_VALUES", 64)  # 2 blocks per step, 30 blocks in all
    np.testing.assert_array_equal(_ours(raw, Q.Q4_1), whole)
    blocks = _random_k_blocks(Q.Q6_K, 5, rng)
    np.testing.assert_array_equal(_ours(blocks, Q.Q6_K), quants.dequantize(blocks, Q.Q6_K).reshape(-1))


@pytest.mark.parametrize(("qtype", "dtype"), [(Q.F16, torch.float16), (Q.BF16, torch.bfloat16), (Q.F32, torch.float32)])
def test_decode_tensor_keeps_float_dtypes_and_owns_its_memory(qtype: GGMLQuantizationType, dtype: torch.dtype) -> None:
    values = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    raw = values.view(torch.uint8).reshape(-1).clone()
    decoded = decode_tensor(raw, qtype, (6, 8))
    assert decoded.dtype == dtype and decoded.shape == (6, 8)
    assert torch.equal(decoded, values)
    raw.zero_()
    assert torch.equal(decoded, values)


def test_decode_tensor_dequantizes_to_float32_in_torch_order() -> None:
    values = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)  # [out, in]
    raw = quants.quantize(values, Q.Q8_0)
    decoded = decode_tensor(torch.from_numpy(raw.reshape(-1).copy()), Q.Q8_0, (4, 64))
    assert decoded.dtype == torch.float32
    np.testing.assert_array_equal(decoded.numpy(), quants.dequantize(raw, Q.Q8_0))


def test_unsupported_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="IQ2_XXS is not supported"):
        dequantize(torch.zeros(66, dtype=torch.uint8), Q.IQ2_XXS)
