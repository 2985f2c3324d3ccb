"""Tiny model files for loader tests: GGUF files written with `gguf.GGUFWriter`, and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from firebox.loader.tokenizer import gpt2_byte_encoder

EOS_TOKEN = "<|endoftext|>"


def llama_cpp_permute(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """The Q/K row permutation of llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel.permute`)."""
    rows = weights.shape[0]
    split = weights.reshape(num_heads, 2, rows // num_heads // 2, *weights.shape[1:])
    return split.swapaxes(1, 2).reshape(weights.shape)


def add_byte_level_vocab(
    writer: GGUFWriter, pre: str = "default", extra_tokens: tuple[str, ...] = (), merges: tuple[str, ...] = ()
) -> list[str]:
    """The 256 byte tokens, a control EOS (id 256), then `extra_tokens`: a working byte-level
    tokenizer."""
    tokens = [*gpt2_byte_encoder().values(), EOS_TOKEN, *extra_tokens]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 256 + [3] + [1] * len(extra_tokens))
    writer.add_token_merges(list(merges))
    writer.add_eos_token_id(256)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    return tokens


def _add_attention_config(
    writer: GGUFWriter, layers: int, hidden: int, heads: int, kv_heads: int, rope_theta: float = 10000.0
) -> None:
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)


def _finish(writer: GGUFWriter, stored: dict[str, np.ndarray] | None = None) -> None:
    for name, array in (stored or {}).items():
        is_quantized = array.dtype == np.uint8
        writer.add_tensor(name, array, raw_dtype=GGMLQuantizationType.Q8_0 if is_quantized else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


_HF_NAMES = {  # written out by hand, independently of firebox.loader.gguf
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
    "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
    "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
    "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
    "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
    "blk.0.attn_q.bias": "model.layers.0.self_attn.q_proj.bias",
    "blk.0.attn_k.bias": "model.layers.0.self_attn.k_proj.bias",
    "blk.0.attn_v.bias": "model.layers.0.self_attn.v_proj.bias",
    "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
    "blk.0.attn_q_norm.weight": "model.layers.0.self_attn.q_norm.weight",
    "blk.0.attn_k_norm.weight": "model.layers.0.self_attn.k_norm.weight",
    "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
    "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
    "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
    "blk.0.ffn_gate_inp.weight": "model.layers.0.mlp.gate.weight",
}


def _random_tensors(shapes: dict[str, tuple[int, ...]], seed: int, dtype: type = np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def _dense_shapes(vocab: int, hidden: int, q_rows: int, kv_rows: int, ffn: int | None) -> dict[str, tuple[int, ...]]:
    """One decoder layer's tensors in numpy (= HF) order; `ffn=None` leaves the MLP out."""
    shapes = {
        "token_embd.weight": (vocab, hidden),
        "output_norm.weight": (hidden,),
        "blk.0.attn_norm.weight": (hidden,),
        "blk.0.ffn_norm.weight": (hidden,),
        "blk.0.attn_q.weight": (q_rows, hidden),
        "blk.0.attn_k.weight": (kv_rows, hidden),
        "blk.0.attn_v.weight": (kv_rows, hidden),
        "blk.0.attn_output.weight": (hidden, q_rows),
    }
    if ffn is not None:
        shapes["blk.0.ffn_gate.weight"] = shapes["blk.0.ffn_up.weight"] = (ffn, hidden)
        shapes["blk.0.ffn_down.weight"] = (hidden, ffn)
    return shapes


def write_tiny_llama(
    path: Path,
    tied: bool = False,
    quantize_q: bool = False,
    rope_theta: float = 10000.0,
    rope_freqs: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """A 1-layer `llama` GGUF (heads of 8, Q/K permuted as llama.cpp stores them, MLP in F16).
    Returns the expected Hugging Face state dict, in HF orientation and row order."""
    hidden, heads, kv_heads = 32, 4, 2
    writer = GGUFWriter(str(path), "llama")
    _add_attention_config(writer, 1, hidden, heads, kv_heads, rope_theta)
    writer.add_feed_forward_length(64)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_file_type(1)
    vocab = len(add_byte_level_vocab(writer))
    shapes = _dense_shapes(vocab, hidden, hidden, kv_heads * 8, 64)
    if not tied:
        shapes["output.weight"] = (vocab, hidden)
    hf_arrays = _random_tensors(shapes, seed=0)
    for name in ("blk.0.attn_output.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"):
        hf_arrays[name] = hf_arrays[name].astype(np.float16)
    if quantize_q:  # rows quantize independently, so dequantized rows permute like the originals
        q8 = quants.quantize(hf_arrays["blk.0.attn_q.weight"], GGMLQuantizationType.Q8_0)
        hf_arrays["blk.0.attn_q.weight"] = quants.dequantize(q8, GGMLQuantizationType.Q8_0)
    stored = dict(hf_arrays)
    stored["blk.0.attn_q.weight"] = llama_cpp_permute(hf_arrays["blk.0.attn_q.weight"], heads)
    stored["blk.0.attn_k.weight"] = llama_cpp_permute(hf_arrays["blk.0.attn_k.weight"], kv_heads)
    if quantize_q:
        stored["blk.0.attn_q.weight"] = quants.quantize(stored["blk.0.attn_q.weight"], GGMLQuantizationType.Q8_0)
    if rope_freqs is not None:
        stored["rope_freqs.weight"] = rope_freqs.astype(np.float32)
    _finish(writer, stored)
    return {_HF_NAMES[name]: array for name, array in hf_arrays.items()}


def converter_llama3_rope_factors(theta: float, head_dim: int, factor: float) -> np.ndarray:
    """`rope_freqs` as llama.cpp's converter computes it for Llama 3.1 (low 1, high 4, 8192)."""
    low_wavelen, high_wavelen = 8192 / 1.0, 8192 / 4.0
    out = []
    for freq in 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim):
        wavelen = 2 * np.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_tiny_qwen3_moe(path: Path) -> dict[str, np.ndarray]:
    """A 1-layer `qwen3moe` GGUF (head_dim 16 != hidden / heads, 3-D expert tensors, q/k norms);
    returns the expected HF state dict."""
    hidden, heads, kv_heads, head_dim, experts, moe_ffn = 32, 4, 2, 16, 4, 8
    writer = GGUFWriter(str(path), "qwen3moe")
    _add_attention_config(writer, 1, hidden, heads, kv_heads)
    writer.add_feed_forward_length(64)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_expert_count(experts)
    writer.add_expert_used_count(2)
    writer.add_expert_feed_forward_length(moe_ffn)
    vocab = len(add_byte_level_vocab(writer, pre="qwen2"))
    shapes = _dense_shapes(vocab, hidden, heads * head_dim, kv_heads * head_dim, ffn=None) | {
        "output.weight": (vocab, hidden),
        "blk.0.attn_q_norm.weight": (head_dim,),
        "blk.0.attn_k_norm.weight": (head_dim,),
        "blk.0.ffn_gate_inp.weight": (experts, hidden),
        "blk.0.ffn_gate_exps.weight": (experts, moe_ffn, hidden),
        "blk.0.ffn_up_exps.weight": (experts, moe_ffn, hidden),
        "blk.0.ffn_down_exps.weight": (experts, hidden, moe_ffn),
    }
    stored = _random_tensors(shapes, seed=1)
    _finish(writer, stored)
    expected = {_HF_NAMES[name]: array for name, array in stored.items() if name in _HF_NAMES}  # not permuted
    for e in range(experts):
        for part in ("gate", "up", "down"):
            expected[f"model.layers.0.mlp.experts.{e}.{part}_proj.weight"] = stored[f"blk.0.ffn_{part}_exps.weight"][e]
    return expected


def write_tiny_qwen2(path: Path) -> dict[str, np.ndarray]:
    """A 1-layer `qwen2` GGUF with q/k/v biases, tied embeddings and no rope permutation; returns
    the expected HF state dict."""
    hidden, heads, kv_heads = 32, 4, 2
    writer = GGUFWriter(str(path), "qwen2")
    _add_attention_config(writer, 1, hidden, heads, kv_heads, rope_theta=1e6)
    writer.add_feed_forward_length(48)
    vocab = len(add_byte_level_vocab(writer, pre="qwen2"))
    shapes = _dense_shapes(vocab, hidden, hidden, kv_heads * 8, 48)
    shapes |= {"blk.0.attn_q.bias": (hidden,), "blk.0.attn_k.bias": (16,), "blk.0.attn_v.bias": (16,)}
    stored = _random_tensors(shapes, seed=2)
    _finish(writer, stored)
    return {_HF_NAMES[name]: array for name, array in stored.items()}


SPM_PIECES = [  # (piece, score): a hand-made SentencePiece vocabulary, merged pieces scored higher
    ("\u2581", -1.0), ("h", -2.0), ("e", -2.1), ("l", -2.2), ("o", -2.3), ("w", -2.4), ("r", -2.5),
    ("d", -2.6), ("ll", -3.0), ("\u2581h", -3.1), ("\u2581w", -3.2), ("or", -3.3), ("\u2581he", -4.0),
    ("\u2581hell", -4.5), ("\u2581hello", -5.0), ("\u2581wor", -5.5), ("\u2581world", -6.0), ("ld", -6.5),
]  # fmt: skip


def write_spm_tokenizer(path: Path) -> None:
    """A `llama` GGUF holding only a SentencePiece vocabulary (no merges: derived from scores)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [p for p, _ in SPM_PIECES] + ["<tool>"]
    scores = [0.0] * 259 + [s for _, s in SPM_PIECES] + [0.0]
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES) + [4]
    writer = GGUFWriter(str(path), "llama")
    _add_attention_config(writer, 1, 8, 2, 2)
    writer.add_feed_forward_length(16)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    _finish(writer, {"token_embd.weight": np.zeros((len(tokens), 8), dtype=np.float32)})


TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}

SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def save_tiny_tokenizer(folder: Path) -> HFTokenizer:
    """A byte-level BPE `tokenizer.json` trained on one sentence; specials get ids 0-3 and the
    post-processor prepends `<s>`."""
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["hello world, the tiny model says hello again"] * 20, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer
