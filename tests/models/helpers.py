"""Plumbing for comparing firebox models with transformers on tiny random weights.

`PagedRunner` drives one of our models through the real paged path: a KV cache tensor per layer,
blocks handed out in a shuffled order, `TorchAttentionBackend` metadata, decodes ordered first as
the model runner orders them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
from firebox.loader.arch_config import ArchConfig
from firebox.models.attention import AttentionBackend, AttentionBatch
from firebox.models.decoder import DecoderForCausalLM
from firebox.models.registry import get_model_class

BLOCK_SIZE = 4
PROMPT = [5, 17, 3, 99, 42, 7, 64, 23, 88, 1, 54, 31, 76, 12, 9, 101, 45, 66, 8, 120]  # 20 tokens
OTHER_PROMPT = [11, 2, 73, 19, 58, 90, 4, 37, 81, 26, 14, 63, 70]  # 13 tokens
MAX_DIFF = 1e-3
TINY_SHAPES = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def tiny(**overrides: object) -> dict[str, object]:
    """Keyword arguments for a tiny transformers config."""
    return {**TINY_SHAPES, **overrides}


def randomize_(model: nn.Module, seed: int = 0) -> None:
    """Weights large enough that a wrong detail moves the logits well past the tolerance
    (transformers' own init gives tiny logits and zero biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.1
            param.copy_(1.0 + noise if "norm" in name else noise)


def make_hf_model(model_cls: type, config: object, seed: int = 0) -> nn.Module:
    config.architectures = [model_cls.__name__]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config)
    randomize_(model, seed)
    return model.eval()


def arch_config_of(hf_model: nn.Module) -> ArchConfig:
    return ArchConfig.from_hf_dict(hf_model.config.to_dict())


def build_ours(
    hf_model: nn.Module, dtype: torch.dtype = torch.float32, backend: AttentionBackend | None = None
) -> DecoderForCausalLM:
    config = arch_config_of(hf_model)
    model = get_model_class(config.architecture)(config, backend or TorchAttentionBackend(), dtype)
    model.load_weights(hf_model.state_dict().items())
    return model


@torch.no_grad()
def hf_logits(hf_model: nn.Module, token_ids: Sequence[int]) -> torch.Tensor:  # [num_tokens, vocab]
    return hf_model(torch.tensor([list(token_ids)])).logits[0].float()


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor, max_diff: float = MAX_DIFF) -> None:
    assert ours.shape == ref.shape
    assert ref.std() > 0.1, "reference logits too flat for the comparison to mean anything"
    diff = (ours - ref).abs().max().item()
    assert diff < max_diff, f"max abs logit diff {diff:.2e} >= {max_diff:.0e}"


def check_prompt_matches_transformers(hf_model: nn.Module) -> DecoderForCausalLM:
    """Build ours from the transformers model, run PROMPT as one paged prefill, compare logits."""
    ours = build_ours(hf_model)
    assert_logits_close(paged_logits(ours, PROMPT), hf_logits(hf_model, PROMPT))
    return ours


class PagedRunner:
    def __init__(
        self,
        model: DecoderForCausalLM,
        num_blocks: int = 48,
        seed: int = 0,
        backend: AttentionBackend | None = None,  # the model's own backend's metadata and KV layout
    ) -> None:
        cfg = model.config
        self.model = model
        self.backend = backend or TorchAttentionBackend()
        shape = self.backend.kv_cache_shape(num_blocks, BLOCK_SIZE, cfg.num_key_value_heads, cfg.head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=model.dtype) for _ in range(cfg.num_hidden_layers)]
        self.free_blocks = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
        self.block_tables: dict[str, list[int]] = {}
        self.seq_lens: dict[str, int] = {}

    def _is_decode(self, seq_id: str, token_ids: Sequence[int]) -> bool:
        return len(token_ids) == 1 and self.seq_lens.get(seq_id, 0) > 0

    def _allocate(self, seq_id: str, new_len: int) -> list[int]:
        table = self.block_tables.setdefault(seq_id, [])
        while len(table) * BLOCK_SIZE < new_len:
            table.append(self.free_blocks.pop())
        return table

    @torch.inference_mode()
    def step(self, chunks: dict[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """Run one forward over every sequence's chunk; logits [len(chunk), vocab] per sequence."""
        order = sorted(chunks, key=lambda s: not self._is_decode(s, chunks[s]))
        context_lens = [self.seq_lens.get(s, 0) for s in order]
        query_lens = [len(chunks[s]) for s in order]
        tables = [self._allocate(s, c + q) for s, c, q in zip(order, context_lens, query_lens, strict=True)]
        num_decodes = sum(self._is_decode(s, chunks[s]) for s in order)
        batch = AttentionBatch(query_lens, context_lens, tables, BLOCK_SIZE, num_decodes)
        meta = self.backend.build_metadata(batch, torch.device("cpu"))
        input_ids = torch.tensor([t for s in order for t in chunks[s]])
        positions = torch.cat([torch.arange(c, c + q) for c, q in zip(context_lens, query_lens, strict=True)])
        logits = self.model.compute_logits(self.model(input_ids, positions, self.kv_caches, meta))
        for s, q in zip(order, query_lens, strict=True):
            self.seq_lens[s] = self.seq_lens.get(s, 0) + q
        return dict(zip(order, logits.split(query_lens), strict=True))

    def run_chunks(self, seq_id: str, token_ids: Sequence[int], chunk_lens: Sequence[int]) -> torch.Tensor:
        """Feed one sequence in consecutive steps of the given sizes; all logits concatenated."""
        if sum(chunk_lens) != len(token_ids):
            raise ValueError("chunk lengths must cover the tokens exactly")
        outs, start = [], 0
        for n in chunk_lens:
            outs.append(self.step({seq_id: token_ids[start : start + n]})[seq_id])
            start += n
        return torch.cat(outs)


def paged_logits(model: DecoderForCausalLM, token_ids: Sequence[int]) -> torch.Tensor:
    """Logits of one whole prompt run as a single prefill through the paged path."""
    return PagedRunner(model).run_chunks("seq", token_ids, [len(token_ids)])
