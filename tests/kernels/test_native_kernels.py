"""firebox's native CPU kernels against the torch code they replace."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
from firebox.kernels import has_native_op, load_native
from firebox.models.attention import AttentionBatch
from firebox.models.layers.quant import (
    BatchAdaptiveKernel,
    pack_q4_reference,
    pack_q8_reference,
    quantize_q4,
    quantize_q8,
    quantize_tinygemm_int4,
)
from firebox.models.layers.rotary import apply_rotary

pytestmark = pytest.mark.skipif(not load_native(), reason="the native kernels did not build here")


def _q4_reference(weight: torch.Tensor) -> torch.Tensor:
    """What the 4-bit grid makes of `weight`: per 32 columns, 16 levels from min to max, the
    offset and the scale held in fp16."""
    groups = weight.view(weight.shape[0], -1, 32)
    low = groups.amin(-1, keepdim=True).half().float()
    scale = ((groups.amax(-1, keepdim=True) - low) / 15).half().float()
    return (((groups - low) / scale).round().clamp(0, 15) * scale + low).view_as(weight)


def _q8_reference(weight: torch.Tensor) -> torch.Tensor:
    groups = weight.view(weight.shape[0], -1, 32)
    scale = (groups.abs().amax(-1, keepdim=True) / 127).half().float()
    return ((groups / scale).round().clamp(-127, 127) * scale).view_as(weight)


def _assert_within_activation_rounding(
    got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, activation_bits: int, q4: bool = True
) -> None:
    """The group kernels round x per group of 32, to int16 (or int8 against 4-bit weights that
    ask for it; half a step: max|x in group| / 65534, or / 254), and multiply the rounded x
    by the levels (w - low, the offset applied to x's exact sum): the result may differ from
    x @ weight.T by that rounding times the group's |w - low|, plus fp32 summation error, and by
    nothing more."""
    rows, cols = x.shape[0], weight.shape[0]
    group_max = x.abs().view(rows, -1, 32).amax(-1)  # [rows, groups]
    groups = weight.view(cols, -1, 32)
    levels = groups - groups.amin(-1, keepdim=True) if q4 else groups  # a q4 grid's low is its group's min
    group_weight = levels.abs().sum(-1)  # [cols, groups]
    half_steps = 254 if activation_bits == 8 else 65534
    bound = group_max @ group_weight.T / half_steps + 1e-5 * (x.abs() @ weight.abs().T) + 1e-5
    error = (got - x @ weight.T).abs()
    assert (error <= bound).all(), f"error {error.max():.2e} beyond the activations' rounding"
    if activation_bits == 8:  # and it really rounds to int8: far beyond what int16 would
        assert error.max() > 4 * (group_max @ group_weight.T / 65534).max()


@pytest.mark.parametrize("rows", [1, 3, 8, 13])
def test_group_kernels_equal_a_matmul_with_the_dequantized_weight(rows: int) -> None:
    torch.manual_seed(rows)
    weight, x = torch.randn(200, 96), torch.randn(rows, 96)  # 200 columns: a partial last block of 16
    x[:, 5] *= 50  # an outlier channel: its group's grid is coarser, the other groups' are not
    for packed, reference in ((quantize_q4(weight), _q4_reference), (quantize_q8(weight), _q8_reference)):
        _assert_within_activation_rounding(packed.matmul(x), x, reference(weight), 16, q4=reference is _q4_reference)
    fast = dataclasses.replace(quantize_q4(weight), activation_bits=8)
    _assert_within_activation_rounding(fast.matmul(x), x, _q4_reference(weight), activation_bits=8)


def test_q4_repacks_a_q4_1_grid_without_loss() -> None:
    torch.manual_seed(0)
    q = torch.randint(0, 16, (64, 128)).float()
    q[:, ::32], q[:, 1::32] = 0, 15  # as GGUF's quantizer: every group spans the whole range
    scale, low = (torch.rand(64, 4, 1) + 0.1).half().float(), torch.randn(64, 4, 1).half().float()  # fp16, as GGUF
    weight = (q.view(64, 4, 32) * scale + low).view(64, 128)
    x = torch.randn(2, 128)
    for activation_bits in (16, 8):
        packed = dataclasses.replace(quantize_q4(weight), activation_bits=activation_bits)
        _assert_within_activation_rounding(packed.matmul(x), x, weight, activation_bits)
    torch.testing.assert_close(quantize_tinygemm_int4(weight).matmul(x), x @ weight.T, rtol=1e-4, atol=1e-3)


def test_native_packing_equals_the_torch_reference_bit_for_bit() -> None:
    torch.manual_seed(4)
    weight = torch.randn(70, 96)  # 70 columns: a zero-padded last block
    weight[3, :32] = 0.5  # a constant group: its scale is the smallest normal float
    for native, reference in ((quantize_q4(weight), pack_q4_reference(weight)), (quantize_q8(weight), pack_q8_reference(weight))):
        for field in ("packed", "scale", "low") if hasattr(native, "low") else ("packed", "scale"):
            assert torch.equal(getattr(native, field), getattr(reference, field)), field


def test_a_row_gets_the_same_bits_whatever_else_is_in_the_batch() -> None:
    """Batch invariance: the group kernels tile rows and columns differently for different row
    counts, but every row's result must be bit-identical to computing that row alone."""
    torch.manual_seed(3)
    weight = torch.randn(100, 64)
    q4 = quantize_q4(weight)
    for packed in (q4, dataclasses.replace(q4, activation_bits=8), quantize_q8(weight)):
        rows = torch.randn(11, 64)
        alone = torch.cat([packed.matmul(rows[i : i + 1]) for i in range(11)])
        for count in (2, 3, 4, 5, 8, 11):
            assert torch.equal(packed.matmul(rows[:count]), alone[:count]), f"{count} rows"


def test_batch_adaptive_kernel_switches_to_dense_above_its_row_limit() -> None:
    weight, bias = torch.randn(64, 64), torch.randn(64)
    small = quantize_tinygemm_int4(weight)
    kernel = BatchAdaptiveKernel(small.matmul, weight, bias, max_small_rows=2)
    few, many = torch.randn(2, 64), torch.randn(3, 64)
    torch.testing.assert_close(kernel(few), small.matmul(few) + bias)
    torch.testing.assert_close(kernel(many), F.linear(many, weight, bias))


def _torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_activation_and_rope_match_torch(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    tol = {"rtol": 0, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 2e-2}
    x, residual = (torch.randn(5, 64, dtype=dtype) for _ in range(2))
    weight = torch.randn(64, dtype=dtype)
    out = torch.empty_like(x)
    torch.ops.firebox.rms_norm(out, x, weight, 1e-6)
    torch.testing.assert_close(out, _torch_rms_norm(x, weight, 1e-6), **tol)

    expected_residual = residual + x
    expected = _torch_rms_norm(expected_residual, weight, 1e-6)
    torch.ops.firebox.fused_add_rms_norm(x, residual, weight, 1e-6)  # in place on both
    torch.testing.assert_close(residual, expected_residual, **tol)
    torch.testing.assert_close(x, expected, **tol)

    gate_up = torch.randn(5, 128, dtype=dtype)
    act = torch.empty(5, 64, dtype=dtype)
    torch.ops.firebox.silu_and_mul(act, gate_up)
    torch.testing.assert_close(act, F.silu(gate_up[:, :64]) * gate_up[:, 64:], **tol)

    qkv = torch.randn(5, 9 + 3 + 3, 16, dtype=dtype)  # q, k, v heads of one fused projection
    cos_sin = torch.randn(5, 16)
    expected_q = apply_rotary(qkv[:, :9], cos_sin.to(dtype))
    expected_k = apply_rotary(qkv[:, 9:12], cos_sin.to(dtype))
    v_before = qkv[:, 12:].clone()
    torch.ops.firebox.rotary_embedding(qkv[:, :9], qkv[:, 9:12], cos_sin)
    torch.testing.assert_close(qkv[:, :9], expected_q, **tol)
    torch.testing.assert_close(qkv[:, 9:12], expected_k, **tol)
    assert torch.equal(qkv[:, 12:], v_before)


@pytest.mark.parametrize("sliding_window", [None, 7])  # 7: shorter than most contexts, not a block multiple
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("block_size", "head_dim"), [(4, 32), (16, 64)])  # generic and fixed-size paths
def test_paged_attention_backend_matches_the_torch_reference(
    dtype: torch.dtype, block_size: int, head_dim: int, sliding_window: int | None
) -> None:
    """Two steps on each backend from empty pools, each in its own KV layout: fresh prompts and a
    chunk, then decodes with a continued chunk and a one-token prompt."""
    from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

    rng = random.Random(0)
    torch.manual_seed(0)
    heads, kv_heads, num_blocks = 6, 2, 64
    free = list(range(num_blocks))
    rng.shuffle(free)
    tables = [[free.pop() for _ in range(-(-40 // block_size))] for _ in range(4)]
    steps = [  # (context_lens, query_lens, request indices, num_decodes)
        ([0, 0, 0], [9, 17, 6], [0, 1, 2], 0),
        ([9, 17, 6, 0], [1, 1, 5, 1], [0, 1, 2, 3], 2),
    ]
    backends = (TorchAttentionBackend(), CpuPagedAttentionBackend())
    caches = [torch.zeros(b.kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), dtype=dtype) for b in backends]
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for context_lens, query_lens, rows, num_decodes in steps:
        batch = AttentionBatch(query_lens, context_lens, [tables[r] for r in rows], block_size, num_decodes)
        num_tokens = sum(query_lens)
        q = torch.randn(num_tokens, heads, head_dim, dtype=dtype)
        k, v = (torch.randn(num_tokens, kv_heads, head_dim, dtype=dtype) for _ in range(2))
        expected, got = (
            b.forward(q, k, v, cache, b.build_metadata(batch, torch.device("cpu")), 0.2, sliding_window)
            for b, cache in zip(backends, caches)
        )
        torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("pool_dtype", [torch.float16, torch.bfloat16])
def test_fp32_queries_attend_over_a_half_width_cache(pool_dtype: torch.dtype) -> None:
    """The native backend stores fp32 keys and values in an fp16 / bf16 pool and reads them back
    widened: the same as the reference over keys and values rounded to that dtype."""
    from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

    torch.manual_seed(5)
    heads, kv_heads, head_dim, block_size, num_blocks = 6, 2, 64, 16, 16
    tables = [[3, 7, 1], [0, 9, 4]]
    steps = [([0, 0], [20, 33], 0), ([20, 33], [1, 1], 2)]  # (context_lens, query_lens, num_decodes)
    native, reference = CpuPagedAttentionBackend(), TorchAttentionBackend()
    native_cache = torch.zeros(native.kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), dtype=pool_dtype)
    reference_cache = torch.zeros(reference.kv_cache_shape(num_blocks, block_size, kv_heads, head_dim))
    for context_lens, query_lens, num_decodes in steps:
        batch = AttentionBatch(query_lens, context_lens, tables, block_size, num_decodes)
        num_tokens = sum(query_lens)
        q = torch.randn(num_tokens, heads, head_dim)
        k, v = (torch.randn(num_tokens, kv_heads, head_dim) for _ in range(2))
        got = native.forward(q, k, v, native_cache, native.build_metadata(batch, torch.device("cpu")), 0.125)
        rounded_k, rounded_v = k.to(pool_dtype).float(), v.to(pool_dtype).float()
        meta = reference.build_metadata(batch, torch.device("cpu"))
        expected = reference.forward(q, rounded_k, rounded_v, reference_cache, meta, 0.125)
        assert got.dtype == torch.float32
        if num_decodes:  # decodes read the pool; fresh prompts attend to their own fp32 k/v
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_layers_pick_the_native_ops_once_they_are_loaded() -> None:
    from firebox.models.layers.norm import RMSNorm

    assert has_native_op("rms_norm") and not has_native_op("no_such_op")
    assert RMSNorm(8, 1e-6).native
