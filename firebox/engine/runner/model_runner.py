"""The model runner: owns the model and the KV tensors, runs one scheduled batch per call.

It is the `ModelExecutor` the engine core is given; it is the only place where scheduler records
meet torch. One forward pass per step over the flattened batch, logits only for the rows that are
sampled (plus prompt rows whose log-probabilities were asked for), one batched sampler pass, and
one host transfer of the results.
"""

from __future__ import annotations

import logging

import torch

from firebox.config import CacheConfig, DeviceConfig, ModelConfig
from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
from firebox.engine.runner.device import configure_threads, resolve_device, resolve_dtype
from firebox.engine.runner.input_batch import ModelInput, prepare_inputs
from firebox.engine.runner.logit_edits import LogitBiasCache
from firebox.engine.runner.sampler import Sampler, build_sampling_batch, compute_prompt_logprobs
from firebox.engine.runner.weight_kernels import PackingSink, install_weight_kernels, resolve_quantization
from firebox.engine.types import ModelRunnerOutput, SchedulerOutput, TokenBitmask, TokenLogprob
from firebox.kernels import load_native
from firebox.loader.arch_config import ArchConfig
from firebox.loader.dummy import init_dummy_weights
from firebox.loader.source import ModelSource
from firebox.models.attention import AttentionBackend
from firebox.models.layer_stacks import StackTarget, choose_layer_stack
from firebox.models.registry import get_model_class

logger = logging.getLogger(__name__)


def kv_bytes_per_block(arch: ArchConfig, block_size: int, dtype: torch.dtype) -> int:
    per_token = 2 * arch.num_hidden_layers * arch.num_key_value_heads * arch.head_dim
    return per_token * block_size * torch.finfo(dtype).bits // 8


def choose_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """firebox's native paged kernel on CPU (when it compiles here), else the portable torch one."""
    if device.type == "cpu" and name in ("auto", "native"):
        if load_native():
            from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

            return CpuPagedAttentionBackend()
        if name == "native":
            raise ValueError("attention_backend 'native' asked for, but the native kernels did not build")
    return TorchAttentionBackend()


class ModelRunner:
    def __init__(
        self,
        model_config: ModelConfig,
        cache_config: CacheConfig,
        device_config: DeviceConfig,
        source: ModelSource,
    ) -> None:
        configure_threads(device_config)
        self.device = resolve_device(device_config)
        self.dtype = resolve_dtype(model_config.dtype, self.device)
        self.arch = source.arch
        self.block_size = cache_config.block_size
        self.eos_token_ids = source.eos_token_ids
        self.attn_backend = choose_attention_backend(device_config.attention_backend, self.device)
        quantization = resolve_quantization(model_config.quantization, self.device)
        self.model, sink = self._build_model(model_config, source, quantization)
        self.kernels = install_weight_kernels(self.model, quantization, source.weight_bits, sink)
        self.kv_dtype = self._kv_cache_dtype(cache_config.kv_cache_dtype, quantization)
        self.num_kv_blocks = cache_config.num_blocks or max(
            1, cache_config.memory_bytes // kv_bytes_per_block(self.arch, self.block_size, self.kv_dtype)
        )
        self.kv_caches = self._allocate_kv_caches(self.num_kv_blocks)
        self.layer_stack = self._attach_layer_stack()  # "native" or "python"
        self.sampler = Sampler()
        self.logit_bias_cache = LogitBiasCache()  # per request, dropped when the scheduler frees it

    def _build_model(
        self, model_config: ModelConfig, source: ModelSource, quantization: str
    ) -> tuple[torch.nn.Module, PackingSink | None]:
        model_cls = get_model_class(source.arch.architecture)
        with torch.device(self.device):
            model = model_cls(source.arch, self.attn_backend, self.dtype)
        sink = None
        if source.is_dummy:
            init_dummy_weights(model, model_config.seed)
        else:
            sink = PackingSink(model, quantization, source.weight_bits)
            model.load_weights(source.weights(), sink=sink)
        return model.eval(), sink

    def _kv_cache_dtype(self, name: str, quantization: str) -> torch.dtype:
        from firebox.engine.runner.attention.cpu_paged import CpuPagedAttentionBackend

        native = isinstance(self.attn_backend, CpuPagedAttentionBackend)
        if name == "auto":
            fast = native and quantization != "none" and self.dtype == torch.float32
            return torch.float16 if fast else self.dtype
        dtype = resolve_dtype(name, self.device)
        if dtype != self.dtype and not (native and self.dtype == torch.float32):
            raise ValueError(f"a {name} KV cache under a {self.dtype} model needs the native CPU attention backend")
        return dtype

    def _attach_layer_stack(self) -> str:
        """The decoder layers as one native call per step where the model and backend allow it,
        else the Python layers; which, and why, goes to the log."""
        choice = choose_layer_stack(StackTarget(self.model, self.attn_backend.name, self.kv_caches, self.block_size))
        self.model.use_layer_stack(choice.stack)
        logger.info("%s runs on the %s (%s)", self.arch.architecture, choice.description, choice.reason)
        return choice.name

    def _allocate_kv_caches(self, num_blocks: int) -> list[torch.Tensor]:
        shape = self.attn_backend.kv_cache_shape(
            num_blocks, self.block_size, self.arch.num_key_value_heads, self.arch.head_dim
        )
        return [
            self.attn_backend.allocate_kv_cache(shape, self.kv_dtype, self.device)
            for _ in range(self.arch.num_hidden_layers)
        ]

    @torch.inference_mode()
    def execute(self, batch: SchedulerOutput) -> ModelRunnerOutput:
        self.logit_bias_cache.drop(batch.freed_request_ids)
        if batch.is_empty:
            return ModelRunnerOutput([], [], None)
        inp = prepare_inputs(batch, self.block_size, self.device)
        meta = self.attn_backend.build_metadata(inp.attention, self.device)
        hidden = self.model(inp.input_ids, inp.positions, self.kv_caches, meta)  # [num_tokens, hidden]
        output = self._sample(inp, hidden, batch.token_bitmask)
        output.prompt_logprobs = self._prompt_logprobs(inp, hidden)
        return output

    def _sample(
        self, inp: ModelInput, hidden: torch.Tensor, token_bitmask: TokenBitmask | None
    ) -> ModelRunnerOutput:
        if not inp.sample_requests:
            return ModelRunnerOutput([], [], None)
        rows = torch.tensor(inp.sample_rows, device=self.device)
        logits = self.model.compute_logits(hidden.index_select(0, rows))  # [num_sampled, vocab] fp32
        sampling = build_sampling_batch(
            inp.sample_requests, logits.shape[-1], self.eos_token_ids, self.device, token_bitmask,
            self.logit_bias_cache,
        )
        token_ids, logprobs = self.sampler(logits, sampling).to_lists()  # one host transfer
        return ModelRunnerOutput(
            request_ids=[r.request_id for r in inp.sample_requests],
            sampled_token_ids=token_ids,
            logprobs=logprobs,
        )

    def _prompt_logprobs(self, inp: ModelInput, hidden: torch.Tensor) -> dict[str, list[TokenLogprob | None]]:
        out: dict[str, list[TokenLogprob | None]] = {}
        by_id = {r.request_id: r for r in inp.requests}
        for span in inp.prompt_spans:
            rows = torch.tensor(span.hidden_rows, device=self.device)
            logits = self.model.compute_logits(hidden.index_select(0, rows))
            targets = torch.tensor(span.target_ids, device=self.device)
            num_top = by_id[span.request_id].sampling.prompt_logprobs or 0
            out[span.request_id] = list(compute_prompt_logprobs(logits, targets, num_top))
        return out
