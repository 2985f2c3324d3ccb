"""Offline inference in the style users know from vLLM:

    from firebox import LLM, SamplingParams
    llm = LLM()                                   # the bundled default model
    out = llm.generate(["Hello"], SamplingParams(max_tokens=32))
    print(out[0].outputs[0].text)

It drives the same `EngineCore` the server runs, stepping it on the caller's thread: every prompt
is submitted at once and continuous batching does the rest.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from firebox.config import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SOURCE,
    DType,
    EngineOptions,
    Quantization,
    SpeculativeMethod,
    engine_config,
)
from firebox.engine.build import build_core
from firebox.engine.types import (
    EngineRequest,
    RequestFailedError,
    RequestOutput,
    RequestTimings,
    SamplingParams,
    TokenLogprob,
)
from firebox.serving.prompt import render_chat

Message = Mapping[str, Any]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: str | int | None
    logprobs: list[TokenLogprob] | None


@dataclass
class GenerationOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[TokenLogprob | None] | None
    num_cached_tokens: int
    timings: RequestTimings | None = None


@dataclass
class _Pending:
    prompt: str | None
    prompt_token_ids: list[int]
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    last: RequestOutput | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


class LLM:
    def __init__(
        self,
        model: str = DEFAULT_MODEL_SOURCE,
        *,
        name: str | None = None,
        dtype: DType = "auto",
        quantization: Quantization = "auto",
        max_model_len: int | None = None,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        num_kv_blocks: int | None = None,
        device: str = "auto",
        num_threads: int | None = None,
        seed: int = 0,
        speculative: SpeculativeMethod = "off",
        draft_model: str | None = None,
    ) -> None:
        config = engine_config(EngineOptions(
            source=model, name=name or (DEFAULT_MODEL_NAME if model == DEFAULT_MODEL_SOURCE else model), dtype=dtype,
            quantization=quantization, max_model_len=max_model_len, seed=seed, num_kv_blocks=num_kv_blocks,
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, device=device,
            num_threads=num_threads, speculative=speculative, draft_model=draft_model,
        ))  # fmt: skip
        self.core, self.model_info = build_core(config)
        self.tokenizer = self.core.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[GenerationOutput]:
        """Complete each prompt (text, or a list of token ids) with no chat template."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        pending = [
            _Pending(p, self.tokenizer.encode(p, add_special_tokens=True))
            if isinstance(p, str)
            else _Pending(None, list(p))
            for p in prompts
        ]
        return self._run(pending, sampling_params)

    def chat(
        self,
        messages: Sequence[Message] | Sequence[Sequence[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[GenerationOutput]:
        """Answer one conversation (a list of messages) or several, through the model's chat template."""
        conversations = [messages] if messages and isinstance(messages[0], Mapping) else messages
        texts = [render_chat(self.tokenizer, [dict(m) for m in conv], add_generation_prompt) for conv in conversations]
        return self._run([_Pending(t, self.tokenizer.encode(t)) for t in texts], sampling_params)

    def _run(
        self, pending: list[_Pending], sampling_params: SamplingParams | Sequence[SamplingParams] | None
    ) -> list[GenerationOutput]:
        params = _per_prompt(sampling_params, len(pending))
        by_id: dict[str, _Pending] = {}
        for item, sampling in zip(pending, params):
            request_id = f"offline-{next(self._ids)}"
            by_id[request_id] = item
            item.logprobs = [] if sampling.logprobs is not None else None
            self.core.add_request(EngineRequest(request_id, tuple(item.prompt_token_ids), sampling, time.monotonic()))
        while self.core.has_unfinished():
            for out in self.core.step():
                _accumulate(by_id[out.request_id], out)
            if failed := self.core.take_failures():
                self.core.abort_all()
                raise RequestFailedError(f"the engine failed while running {failed}; see the log")
        return [_result(request_id, item) for request_id, item in by_id.items()]


def _per_prompt(sampling_params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, SamplingParams):
        return [sampling_params] * n
    if len(sampling_params) != n:
        raise ValueError(f"got {len(sampling_params)} SamplingParams for {n} prompts")
    return list(sampling_params)


def _accumulate(item: _Pending, out: RequestOutput) -> None:
    item.text.append(out.text_delta)
    item.token_ids.extend(out.new_token_ids)
    if item.logprobs is not None and out.logprobs:
        item.logprobs.extend(out.logprobs)
    if out.prompt_logprobs is not None:
        item.prompt_logprobs = out.prompt_logprobs
    item.last = out


def _result(request_id: str, item: _Pending) -> GenerationOutput:
    last = item.last
    completion = CompletionOutput(
        index=0,
        text="".join(item.text),
        token_ids=item.token_ids,
        finish_reason=None if last is None or last.finish_reason is None else str(last.finish_reason),
        stop_reason=None if last is None else last.stop_reason,
        logprobs=item.logprobs,
    )
    return GenerationOutput(
        request_id=request_id,
        prompt=item.prompt,
        prompt_token_ids=item.prompt_token_ids,
        outputs=[completion],
        prompt_logprobs=item.prompt_logprobs,
        num_cached_tokens=0 if last is None else last.num_cached_tokens,
        timings=None if last is None else last.timings,
    )
