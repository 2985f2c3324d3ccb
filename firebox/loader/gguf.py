"""GGUF checkpoints: architecture from metadata, weights under Hugging Face names.

llama.cpp's metadata keys (`<arch>.block_count`, ...) are mapped onto the `config.json` keys that
`ArchConfig.from_hf_dict` reads, and tensor names (`blk.0.attn_q.weight`) onto the checkpoint
names the model modules load (`model.layers.0.self_attn.q_proj.weight`), so models see one format.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gguf import LlamaFileType

from firebox.loader.arch_config import ArchConfig
from firebox.loader.gguf_file import GGUFFile, GGUFTensorInfo
from firebox.loader.quantized import NATIVE_BLOCK_TYPES, QuantizedTensor, WeightTensor

if TYPE_CHECKING:  # torch is imported where weights are read, not where a model is described
    import torch

# general.architecture -> (HF architecture, HF model_type)
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),  # Mistral GGUFs say "llama" too
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "qwen3moe": ("Qwen3MoeForCausalLM", "qwen3_moe"),
}
_HF_CONFIG_KEYS = {  # "<arch>.<key>" -> config.json key
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
}
_MOE_DEFAULTS = {"norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": []}  # as llama.cpp runs it

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
}
_EXPERT_NAMES = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_NON_WEIGHTS = frozenset({"rope_freqs.weight"})  # folded into ArchConfig.rope_scaling


def gguf_architecture(file: GGUFFile) -> str:
    arch = file.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not supported (supported: {sorted(_ARCHITECTURES)})")
    return arch


def gguf_arch_config(file: GGUFFile) -> ArchConfig:
    """The file's architecture as `config.json` would state it."""
    arch = gguf_architecture(file)
    if arch == "llama" and file.get("llama.expert_count"):
        raise ValueError("Mixtral-style GGUF files (llama with experts) are not supported; use the safetensors folder")
    architecture, model_type = _ARCHITECTURES[arch]
    cfg: dict[str, Any] = {"architectures": [architecture], "model_type": model_type}
    for key, hf_key in _HF_CONFIG_KEYS.items():
        if f"{arch}.{key}" in file.metadata:
            cfg[hf_key] = file.metadata[f"{arch}.{key}"]
    cfg.setdefault("vocab_size", len(file.get("tokenizer.ggml.tokens", ())))
    head_dim = file.get(f"{arch}.attention.key_length", file.get(f"{arch}.rope.dimension_count"))
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    cfg["tie_word_embeddings"] = "output.weight" not in file.tensors
    cfg["attention_bias"] = "blk.0.attn_q.bias" in file.tensors
    if "num_experts" in cfg:
        cfg.update({k: v for k, v in _MOE_DEFAULTS.items() if k not in cfg})
    rope_scaling = _rope_scaling(file, arch, cfg)
    if rope_scaling is not None:
        cfg["rope_scaling"] = rope_scaling
    return ArchConfig.from_hf_dict(cfg)


def gguf_file_type(file: GGUFFile) -> str:
    """The quantization the file is known by, e.g. "Q4_1" (from `general.file_type`, else the
    most common type among its matrices)."""
    try:
        return LlamaFileType(file.get("general.file_type")).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:  # absent or unknown
        pass
    matrices = Counter(t.ggml_type.name for t in file.tensors.values() if len(t.shape) >= 2)
    return matrices.most_common(1)[0][0] if matrices else "F32"


def iter_gguf_weights(
    file: GGUFFile,
    arch: ArchConfig,
    progress: Callable[[int, int], None] | None = None,
    keep_blocks: bool = False,
) -> Iterator[tuple[str, WeightTensor]]:
    """Every weight under its Hugging Face name; quantized tensors dequantized to float32, float
    ones in their own dtype, and with `keep_blocks` the matrices of a block type firebox decodes
    natively as they are (`QuantizedTensor`); `progress(done, total)` as each GGUF tensor is read."""
    permute_heads = gguf_architecture(file) == "llama"
    infos = [info for name, info in file.tensors.items() if name not in _NON_WEIGHTS]
    names = [hf_tensor_name(info.name) for info in infos]  # fails before any work on unknown names
    for done, (info, hf_name) in enumerate(zip(infos, names), start=1):
        rope_heads = None
        if permute_heads and re.search(r"\.self_attn\.[qk]_proj\.", hf_name):
            rope_heads = arch.num_attention_heads if ".q_proj." in hf_name else arch.num_key_value_heads
        if keep_blocks and len(info.shape) == 2 and info.ggml_type in NATIVE_BLOCK_TYPES and "{expert}" not in hf_name:
            items: list[tuple[str, WeightTensor]] = [(hf_name, _quantized(file, info, rope_heads))]
        else:
            tensor = _read(file, info)
            if rope_heads is not None:
                tensor = unpermute_rope_rows(tensor, rope_heads)
            if "{expert}" in hf_name:  # [num_experts, out, in] -> [out, in] each
                items = [(hf_name.format(expert=expert), expert_tensor) for expert, expert_tensor in enumerate(tensor)]
            else:
                items = [(hf_name, tensor)]
        if progress is not None:
            progress(done, len(infos))
        yield from items


def _quantized(file: GGUFFile, info: GGUFTensorInfo, rope_heads: int | None) -> QuantizedTensor:
    import torch

    rows = info.shape[0]
    order = None if rope_heads is None else unpermute_rope_rows(torch.arange(rows), rope_heads)
    return QuantizedTensor(torch.from_numpy(file.tensor_bytes(info)), info.ggml_type, torch.Size(info.shape), order)


def hf_tensor_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; expert tensors get an
    `{expert}` placeholder (`model.layers.3.mlp.experts.{expert}.up_proj.weight`)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_LEVEL_NAMES and suffix in ("weight", "bias"):
        return f"{_TOP_LEVEL_NAMES[stem]}.{suffix}"
    match = _BLOCK_TENSOR.fullmatch(gguf_name)
    if match:
        layer, part, suffix = match.groups()
        if part in _BLOCK_NAMES:
            return f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{suffix}"
        if part in _EXPERT_NAMES:
            return f"model.layers.{layer}.mlp.experts.{{expert}}.{_EXPERT_NAMES[part]}.{suffix}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart that firebox knows")


def unpermute_rope_rows(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo the Q/K row order llama.cpp's converter gives `llama` models (it interleaves the two
    rotary halves of each head); same as transformers' `reverse_permute_weights`."""
    rows = weight.shape[0]
    split = weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])  # [heads, half, 2, ...]
    return split.transpose(1, 2).reshape(weight.shape)


def _read(file: GGUFFile, info: GGUFTensorInfo) -> torch.Tensor:
    import torch

    from firebox.loader.dequant import decode_tensor

    return decode_tensor(torch.from_numpy(file.tensor_bytes(info)), info.ggml_type, info.shape)


# --- rope scaling ------------------------------------------------------------------------------


def _rope_scaling(file: GGUFFile, arch: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    kind = file.get(f"{arch}.rope.scaling.type")
    factor = file.get(f"{arch}.rope.scaling.factor")
    if kind in ("linear", "yarn") and factor:
        scaling = {"rope_type": kind, "factor": float(factor)}
        original = file.get(f"{arch}.rope.scaling.original_context_length")
        if original:
            scaling["original_max_position_embeddings"] = int(original)
        return scaling
    if "rope_freqs.weight" in file.tensors:
        return _llama3_rope_scaling(_read(file, file.tensors["rope_freqs.weight"]), cfg)
    return None


def _llama3_rope_scaling(freq_factors: torch.Tensor, cfg: dict[str, Any]) -> dict[str, Any]:
    """Llama 3.1+ files store per-frequency divisors (`rope_freqs`) instead of the scaling
    parameters; recover the parameters by matching them with the converter's formula."""
    factor = float(freq_factors.max())
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    import torch

    expected = llama3_rope_factors(scaling, float(cfg.get("rope_theta", 10000.0)), head_dim)
    if expected.shape != freq_factors.shape or not torch.allclose(expected, freq_factors.float(), rtol=1e-3):
        raise ValueError("GGUF rope_freqs do not match Llama 3 rope scaling; this rope variant is not supported")
    return scaling


def llama3_rope_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> torch.Tensor:
    """The divisors llama.cpp's converter writes as `rope_freqs` for Llama 3 rope scaling."""
    original, low, high = (scaling[k] for k in ("original_max_position_embeddings", "low_freq_factor", "high_freq_factor"))
    low_wavelen, high_wavelen = original / low, original / high
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(scaling["factor"])
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / scaling["factor"] + smooth))
    import torch

    return torch.tensor(factors, dtype=torch.float32)

