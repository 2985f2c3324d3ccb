"""GGUF metadata -> ArchConfig and GGUF tensors -> Hugging Face state dicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter

from firebox.loader.gguf import gguf_arch_config, hf_tensor_name, iter_gguf_weights, unpermute_rope_rows
from firebox.loader.gguf_file import GGUFFile
from firebox.loader.source import ModelSource, gguf_source
from firebox.loader.quantized import QuantizedTensor, dense
from tests.loader.loader_builders import (
    converter_llama3_rope_factors,
    llama_cpp_permute,
    write_tiny_llama,
    write_tiny_qwen2,
    write_tiny_qwen3_moe,
)


def _metadata_only(path: Path, arch: str, expert_count: int | None = None) -> GGUFFile:
    writer = GGUFWriter(str(path), arch)
    if expert_count is not None:
        writer.add_expert_count(expert_count)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return GGUFFile(path)


def _assert_state_dict(ours: dict[str, torch.Tensor], expected: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(expected)
    for name, array in expected.items():
        assert ours[name].shape == array.shape, name
        np.testing.assert_array_equal(ours[name].float().numpy(), array.astype(np.float32), err_msg=name)


@pytest.mark.parametrize("tied", [False, True])
def test_llama_weights_come_back_in_hf_names_order_and_dtype(tmp_path: Path, tied: bool) -> None:
    expected = write_tiny_llama(tmp_path / "m.gguf", tied=tied)
    source = gguf_source(tmp_path / "m.gguf")
    weights = dict(source.weights())
    _assert_state_dict(weights, expected)
    assert weights["model.layers.0.mlp.up_proj.weight"].dtype == torch.float16  # F16 stays F16
    assert weights["model.norm.weight"].dtype == torch.float32
    assert source.arch.tie_word_embeddings is tied
    assert source.description == f"GGUF F16 {tmp_path / 'm.gguf'}"


def test_quantized_q_projection_is_dequantized_and_unpermuted(tmp_path: Path) -> None:
    expected = write_tiny_llama(tmp_path / "m.gguf", quantize_q=True)
    streamed = dict(gguf_source(tmp_path / "m.gguf").weights())
    q_proj = streamed["model.layers.0.self_attn.q_proj.weight"]
    assert isinstance(q_proj, QuantizedTensor)  # kept as blocks for the packers
    assert dense(q_proj).dtype == torch.float32
    _assert_state_dict({name: dense(tensor) for name, tensor in streamed.items()}, expected)


def test_llama_arch_config(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "m.gguf")
    arch = gguf_arch_config(GGUFFile(tmp_path / "m.gguf"))
    assert arch.architecture == "LlamaForCausalLM"
    assert (arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers) == (32, 64, 1)
    assert (arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim) == (4, 2, 8)
    assert arch.vocab_size == 257  # no vocab_size key: the token count
    assert arch.max_position_embeddings == 64 and arch.rope_theta == 10000.0
    assert arch.rms_norm_eps == pytest.approx(1e-5) and arch.rope_scaling is None
    assert arch.attention_bias is False


def test_qwen3_moe_experts_are_split_and_not_permuted(tmp_path: Path) -> None:
    expected = write_tiny_qwen3_moe(tmp_path / "moe.gguf")
    source = gguf_source(tmp_path / "moe.gguf")
    _assert_state_dict(dict(source.weights()), expected)
    arch = source.arch
    assert arch.architecture == "Qwen3MoeForCausalLM"
    assert arch.head_dim == 16  # attention.key_length, not hidden / heads
    assert (arch.get("num_experts"), arch.get("num_experts_per_tok"), arch.get("moe_intermediate_size")) == (4, 2, 8)
    assert arch.get("norm_topk_prob") is True and arch.tie_word_embeddings is False


def test_qwen2_biases_load_and_rows_keep_their_order(tmp_path: Path) -> None:
    expected = write_tiny_qwen2(tmp_path / "q.gguf")
    source = gguf_source(tmp_path / "q.gguf")
    _assert_state_dict(dict(source.weights()), expected)
    arch = source.arch
    assert arch.architecture == "Qwen2ForCausalLM" and arch.attention_bias is True
    assert arch.tie_word_embeddings is True and arch.head_dim == 8 and arch.rope_theta == 1e6
    assert source.description.startswith("GGUF F32 ")  # no general.file_type: the matrices' type


def test_mixtral_style_llama_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Mixtral"):
        gguf_arch_config(_metadata_only(tmp_path / "x.gguf", "llama", expert_count=8))


def test_llama3_rope_frequencies_become_rope_scaling(tmp_path: Path) -> None:
    factors = converter_llama3_rope_factors(theta=500000.0, head_dim=8, factor=8.0)
    assert 1.0 < factors[2] < 8.0  # the test shape reaches all three bands
    write_tiny_llama(tmp_path / "m.gguf", rope_theta=500000.0, rope_freqs=factors)
    source = gguf_source(tmp_path / "m.gguf")
    assert source.arch.rope_scaling == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert "rope_freqs.weight" not in dict(source.weights())


def test_unknown_rope_frequencies_are_refused(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "m.gguf", rope_theta=500000.0, rope_freqs=np.array([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="rope_freqs"):
        gguf_arch_config(GGUFFile(tmp_path / "m.gguf"))


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="architecture 'phi3' is not supported"):
        gguf_arch_config(_metadata_only(tmp_path / "x.gguf", "phi3"))


def test_progress_reports_every_tensor(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "m.gguf")
    file = GGUFFile(tmp_path / "m.gguf")
    calls: list[tuple[int, int]] = []
    names = [name for name, _ in iter_gguf_weights(file, gguf_arch_config(file), lambda d, t: calls.append((d, t)))]
    assert calls == [(i, 12) for i in range(1, 13)] and len(names) == 12


@pytest.mark.parametrize(
    ("gguf_name", "hf_name"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("blk.12.attn_q.bias", "model.layers.12.self_attn.q_proj.bias"),
        ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"),
        ("blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight"),
        ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
        ("blk.3.ffn_gate_inp.weight", "model.layers.3.mlp.gate.weight"),
        ("blk.3.ffn_down_exps.weight", "model.layers.3.mlp.experts.{expert}.down_proj.weight"),
    ],
)
def test_tensor_names(gguf_name: str, hf_name: str) -> None:
    assert hf_tensor_name(gguf_name) == hf_name


def test_unknown_tensor_name_is_refused() -> None:
    with pytest.raises(ValueError, match="blk.0.ffn_gate_shexp.weight"):
        hf_tensor_name("blk.0.ffn_gate_shexp.weight")


@pytest.mark.parametrize("num_heads", [1, 3, 9])
def test_unpermute_inverts_llama_cpp_permutation(num_heads: int) -> None:
    weight = np.random.default_rng(num_heads).standard_normal((num_heads * 8, 5)).astype(np.float32)
    permuted = torch.from_numpy(llama_cpp_permute(weight, num_heads))
    assert not np.array_equal(permuted.numpy(), weight)
    np.testing.assert_array_equal(unpermute_rope_rows(permuted, num_heads).numpy(), weight)


# --- the real default model ----------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_arch(default_source: ModelSource) -> None:
    arch = default_source.arch
    assert arch.architecture == "LlamaForCausalLM"
    assert (arch.vocab_size, arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers) == (49152, 576, 1536, 30)
    assert (arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim) == (9, 3, 64)
    assert arch.rope_theta == 100000.0 and arch.max_position_embeddings == 8192
    assert arch.tie_word_embeddings is True and arch.rms_norm_eps == pytest.approx(1e-5)
    assert default_source.max_model_len == 8192
    assert default_source.description.startswith("GGUF Q4_1 ") and default_source.description.endswith(".gguf")


@pytest.mark.slow
def test_default_model_state_dict_equals_transformers(
    default_state_dict: dict[str, torch.Tensor], reference_state_dict: dict[str, torch.Tensor]
) -> None:
    assert len(default_state_dict) == 272
    assert set(reference_state_dict) - set(default_state_dict) == {"lm_head.weight"}  # tied
    assert set(default_state_dict) <= set(reference_state_dict)
    for name, tensor in default_state_dict.items():
        reference = reference_state_dict[name]
        assert tensor.dtype == torch.float32 and tensor.shape == reference.shape, name
        torch.testing.assert_close(tensor, reference, atol=1e-6, rtol=0, msg=name)
