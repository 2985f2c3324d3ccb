"""A fake engine over a small real tokenizer, for testing the serving layer and the API.

`FakeEngine` implements `EngineClient`: it answers a fixed sentence (its words shuffled by the
seed, so different seeds give different but repeatable text) or an echo of the prompt, token by
token with an optional delay, honouring max_tokens, EOS / ignore_eos, stop token ids, stop
strings, logprobs and prompt logprobs (made up but consistent), and reports timings and
prefix-cache hits. It records what it was sent and what was aborted, and can be told to refuse
requests (queue full) or to fail in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from firebox.engine.types import (
    EngineDeadError,
    EngineRequest,
    FinishReason,
    ModelInfo,
    PromptTooLongError,
    QueueFullError,
    RequestOutput,
    RequestTimings,
    TokenLogprob,
)
from firebox.loader.tokenizer import SpecialTokens, Tokenizer

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# SmolLM2-Instruct's template (ChatML with a default system prompt)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris. Paris has about two million people.",
    "Tell me a story about a quick brown fox that jumps over the lazy dog.",
    "You are a helpful assistant. What's its population? Hello, world!",
    "Language models process text in chunks called tokens. Tokens matter.",
    "system user assistant tool Once upon a time there was a tiny model.",
    "0123456789 +-*/=()[]{}<>.,;:!?'\" héllo naïve café ünïcödé 你好 🙂",
]

REPLY = "Once upon a time a tiny model answered every question with a short and cheerful story."


def build_backend(vocab_size: int = 420) -> HFTokenizer:
    """A byte-level BPE trained on a few sentences, with the ChatML special tokens."""
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    return backend


@functools.cache
def chatml_tokenizer() -> Tokenizer:
    return Tokenizer(build_backend(), CHATML_SPECIAL, CHATML_TEMPLATE)


CHATML_SPECIAL = SpecialTokens(eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")

# Qwen3's template, shortened: tools listed in <tools>, calls written in <tool_call>, tool results
# in <tool_response>, and `enable_thinking=False` closing an empty thinking block in the prompt
QWEN3_TEMPLATE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}
{%- for tool_call in message.tool_calls or [] %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% endif %}{% endif %}"""

# QwQ / DeepSeek-R1 style: the prompt opens the thinking, which no variable turns off
OPENS_THINKING_TEMPLATE = CHATML_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")


@functools.cache
def thinking_tokenizer(template: str = QWEN3_TEMPLATE) -> Tokenizer:
    """The fake tokenizer with a chat template of a model that thinks out loud."""
    return Tokenizer(build_backend(), CHATML_SPECIAL, template)


@dataclass
class FakeEngine:
    tokenizer: Tokenizer = field(default_factory=chatml_tokenizer)
    name: str = "accounts/fireworks/models/fake-chatml"
    max_model_len: int = 256
    token_delay: float = 0.0  # seconds between deltas
    reply: str | None = REPLY  # None: echo the prompt back
    generation_defaults: dict[str, float] = field(default_factory=dict)
    tool_call_format: str | None = None  # as a catalog entry names it
    queue_full: bool = False  # refuse every request with QueueFullError
    fail_after: int | None = None  # raise EngineDeadError after this many tokens
    block_size: int = 4  # prefix-cache granularity
    submitted: list[EngineRequest] = field(default_factory=list)
    running: dict[str, EngineRequest] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    _cached_prompts: list[tuple[str | None, tuple[int, ...]]] = field(default_factory=list)
    _abort_requested: set[str] = field(default_factory=set)

    @property
    def model_info(self) -> ModelInfo:
        eos = self.tokenizer.eos_token_ids
        return ModelInfo(
            self.name, "FakeForCausalLM", self.max_model_len, self.tokenizer.vocab_size, eos, self.generation_defaults,
            self.tool_call_format,
        )  # fmt: skip

    def reset(self) -> None:
        self.token_delay, self.reply, self.queue_full, self.fail_after = 0.0, REPLY, False, None
        self.generation_defaults = {}
        for log in (self.submitted, self.finished, self.aborted, self._cached_prompts):
            log.clear()

    async def abort(self, request_id: str) -> None:
        self._abort_requested.add(request_id)

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        if self.queue_full:
            raise QueueFullError("the waiting queue is full")
        if len(request.prompt_token_ids) >= self.max_model_len:
            raise PromptTooLongError(len(request.prompt_token_ids), self.max_model_len)
        self.submitted.append(request)
        self.running[request.request_id] = request
        try:
            for output in self._outputs(request):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if output.finished:
                    self.running.pop(request.request_id, None)
                    self.finished.append(request.request_id)
                yield output
        finally:
            if self.running.pop(request.request_id, None) is not None:
                self.aborted.append(request.request_id)

    # --- what the fake model says ---------------------------------------------------------

    def reply_ids(self, request: EngineRequest) -> list[int]:
        if self.reply is None:
            return list(request.prompt_token_ids)
        words = self.reply.split()
        if request.sampling.seed is not None:
            random.Random(request.sampling.seed).shuffle(words)
        return self.tokenizer.encode(" ".join(words))

    def logprob(self, token_id: int, position: int, num_top: int) -> TokenLogprob:
        chosen = -0.25 - (position % 7) / 10
        top = [(token_id, chosen)] + [
            ((token_id + k) % self.tokenizer.vocab_size, chosen - k) for k in range(1, num_top)
        ]
        return TokenLogprob(token_id, chosen, top[:num_top])

    def _prompt_logprobs(self, request: EngineRequest) -> list[TokenLogprob | None] | None:
        num_top = request.sampling.prompt_logprobs
        if num_top is None:
            return None
        ids = request.prompt_token_ids
        return [None] + [self.logprob(t, -i, num_top) for i, t in enumerate(ids[1:], start=1)]

    def _cached_tokens(self, request: EngineRequest) -> int:
        prompt, best = request.prompt_token_ids, 0
        for salt, earlier in self._cached_prompts:
            if salt == request.cache_salt:
                common = next(
                    (i for i, (a, b) in enumerate(zip(prompt, earlier)) if a != b), min(len(prompt), len(earlier))
                )
                best = max(best, common)
        self._cached_prompts.append((request.cache_salt, prompt))
        best = min(best, len(prompt) - 1)
        return best - best % self.block_size

    def _token_stream(self, request: EngineRequest) -> Iterator[tuple[int, FinishReason | None, str | int | None]]:
        """(token id, finish reason, stop reason) per generated token."""
        sampling, eos_ids = request.sampling, self.tokenizer.eos_token_ids
        ids = self.reply_ids(request)
        if not sampling.ignore_eos:
            ids = ids + list(eos_ids[:1])
        for position in range(sampling.max_tokens):
            token = ids[position % len(ids)]
            if token in sampling.stop_token_ids or (token in eos_ids and not sampling.ignore_eos):
                yield token, FinishReason.STOP, token
                return
            last = position == sampling.max_tokens - 1
            yield token, FinishReason.LENGTH if last else None, None

    def _outputs(self, request: EngineRequest) -> Iterator[RequestOutput]:
        sampling = request.sampling
        timings = RequestTimings(arrival=request.arrival_time, scheduled=time.monotonic())
        cached = self._cached_tokens(request)
        prompt_logprobs = self._prompt_logprobs(request)

        def output(
            ids: list[int],
            text: str,
            finish: FinishReason | None,
            stop: str | int | None,
            lps: list[TokenLogprob] | None,
        ) -> RequestOutput:
            nonlocal prompt_logprobs
            first, prompt_logprobs = prompt_logprobs, None
            if finish is not None:
                timings.finished = time.monotonic()
            return RequestOutput(
                request.request_id, ids, text, lps, first, finish, stop, len(request.prompt_token_ids), cached, timings
            )

        if sampling.max_tokens == 0:
            yield output([], "", FinishReason.LENGTH, None, None)
            return
        decoder = self.tokenizer.decode_stream(skip_special_tokens=sampling.skip_special_tokens)
        text = ""
        for position, (token, finish, stop) in enumerate(self._token_stream(request)):
            if self.fail_after is not None and position >= self.fail_after:
                raise EngineDeadError("the fake engine failed on purpose")
            if request.request_id in self._abort_requested:
                yield output([], "", FinishReason.ABORT, None, None)
                return
            timings.first_token = timings.first_token or time.monotonic()
            delta = decoder.step(token)
            lps = [self.logprob(token, position, sampling.logprobs)] if sampling.logprobs is not None else None
            matched = next((s for s in sampling.stop if s in text + delta), None)
            if matched is not None:  # cut the stop string and what follows
                cut = (text + delta).index(matched)
                yield output([token], (text + delta)[len(text) : cut], FinishReason.STOP, matched, lps)
                return
            text += delta
            yield output([token], delta, finish, stop, lps)
            if finish is not None:
                return
