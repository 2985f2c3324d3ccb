"""Fakes for engine tests: a deterministic executor over a fake KV pool, builders, a tokenizer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from firebox.config import CacheConfig, SchedulerConfig
from firebox.engine.core import EngineCore, build_engine_core
from firebox.engine.kv_cache import KVCacheManager
from firebox.engine.request import Request
from firebox.engine.scheduler import Scheduler
from firebox.engine.types import (
    EngineRequest,
    ModelRunnerOutput,
    SamplingParams,
    ScheduledRequest,
    SchedulerOutput,
    StructuredOutputSpec,
    TokenLogprob,
)
from firebox.loader.tokenizer import SpecialTokens, Tokenizer

EOS = 0  # the fake model's EOS; `context_hash_token` never returns it
VOCAB = 200  # prompts in these tests use token ids below this

NextToken = Callable[[ScheduledRequest, list[int]], int]


def context_hash_token(sched: ScheduledRequest, context: list[int]) -> int:
    """Next token as a function of the whole context: any corrupted KV slot changes it."""
    return 1 + sum((i + 1) * t for i, t in enumerate(context)) % (VOCAB - 1)


def prompt_logprob(position: int) -> float:
    return -position / 10


class FakeExecutor:
    """A `ModelExecutor` that "computes" KV by writing (position, token) into slots through the
    block tables (every write of a step before any read, as the real runner), then samples
    `next_token(request, context)` from the context read back out of the slots."""

    def __init__(self, num_kv_blocks: int, block_size: int, next_token: NextToken = context_hash_token) -> None:
        self.num_kv_blocks = num_kv_blocks
        self.block_size = block_size
        self.next_token = next_token
        self.slots: dict[int, tuple[int, int]] = {}
        self.batches: list[SchedulerOutput] = []

    def _slot(self, block_ids: list[int], position: int) -> int:
        if position // self.block_size >= len(block_ids):
            raise AssertionError(f"position {position} past the block table {block_ids}")
        block_id = block_ids[position // self.block_size]
        if not 0 <= block_id < self.num_kv_blocks:
            raise AssertionError(f"block id {block_id} outside the pool")
        return block_id * self.block_size + position % self.block_size

    def _context(self, sched: ScheduledRequest) -> list[int]:
        context = []
        for position in range(sched.start_pos + len(sched.token_ids)):
            written_position, token = self.slots[self._slot(sched.block_ids, position)]
            if written_position != position:
                raise AssertionError(f"{sched.request_id}: slot of position {position} holds {written_position}")
            context.append(token)
        return context

    def execute(self, batch: SchedulerOutput) -> ModelRunnerOutput:
        self.batches.append(batch)
        for sched in batch.requests:
            for offset, token in enumerate(sched.token_ids):
                position = sched.start_pos + offset
                self.slots[self._slot(sched.block_ids, position)] = (position, token)
        out = ModelRunnerOutput(request_ids=[], sampled_token_ids=[], logprobs=[])
        for sched in batch.requests:
            context = self._context(sched)
            if sched.compute_prompt_logprobs:
                out.prompt_logprobs[sched.request_id] = _prompt_logprobs(sched)
            num_drafts = len(sched.draft_token_ids)
            for j in range(sched.num_sampled):  # the last token's position, then one per draft
                position = dataclasses.replace(sched, seed_offset=sched.seed_offset + j)
                token = self.next_token(position, context[: len(context) - num_drafts + j])
                out.request_ids.append(sched.request_id)
                out.sampled_token_ids.append(token)
                out.logprobs.append(TokenLogprob(token, -1.0, [(token, -1.0)]))
        return out


def _prompt_logprobs(sched: ScheduledRequest) -> list[TokenLogprob | None]:
    """The runner's convention: a chunk over positions [s, e) gives prompt positions s+1 .. min(e, P-1)."""
    end = min(sched.start_pos + len(sched.token_ids), len(sched.prompt_token_ids) - 1)
    return [
        TokenLogprob(sched.prompt_token_ids[p], prompt_logprob(p)) for p in range(sched.start_pos + 1, end + 1)
    ]


def scripted(tokens_by_request: dict[str, list[int]]) -> NextToken:
    """Each request generates its script, token by token."""
    return lambda sched, context: tokens_by_request[sched.request_id][sched.seed_offset]


# --- builders -------------------------------------------------------------------------------


def make_scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_batched_tokens: int = 32,
    max_num_seqs: int = 16,
    max_waiting: int = 64,
    max_model_len: int = 4096,
    enable_prefix_caching: bool = True,
) -> Scheduler:
    kv = KVCacheManager(CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching), num_blocks)
    config = SchedulerConfig(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, max_waiting=max_waiting
    )
    return Scheduler(config, kv, max_model_len=max_model_len, eos_token_ids=(EOS,))


def make_request(
    request_id: str,
    prompt: Iterable[int] | int,
    priority: int = 0,
    arrival: float = 0.0,
    cache_salt: str | None = None,
    **sampling,
) -> Request:
    """A request; an int prompt means tokens 1..prompt."""
    sampling.setdefault("max_tokens", 8)
    prompt_ids = list(range(1, prompt + 1)) if isinstance(prompt, int) else list(prompt)
    return Request.from_engine_request(
        make_engine_request(request_id, prompt_ids, priority, arrival, cache_salt, **sampling)
    )


def make_engine_request(
    request_id: str,
    prompt: Iterable[int],
    priority: int = 0,
    arrival: float = 0.0,
    cache_salt: str | None = None,
    structured_output: StructuredOutputSpec | None = None,
    prediction_token_ids: tuple[int, ...] = (),
    **sampling,
) -> EngineRequest:
    return EngineRequest(
        request_id,
        tuple(prompt),
        SamplingParams(**sampling),
        arrival,
        priority,
        cache_salt,
        structured_output=structured_output,
        prediction_token_ids=prediction_token_ids,
    )


def make_core(
    tokenizer: Tokenizer,
    next_token: NextToken = context_hash_token,
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_batched_tokens: int = 32,
    max_model_len: int = 4096,
    max_waiting: int = 64,
    eos_token_ids: tuple[int, ...] = (EOS,),
) -> tuple[EngineCore, FakeExecutor]:
    executor = FakeExecutor(num_blocks, block_size, next_token)
    core = build_engine_core(
        executor,
        tokenizer,
        cache_config=CacheConfig(block_size=block_size),
        scheduler_config=SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens, max_waiting=max_waiting),
        max_model_len=max_model_len,
        eos_token_ids=eos_token_ids,
    )
    return core, executor


def run_scheduler(scheduler: Scheduler, executor: FakeExecutor, max_steps: int = 10_000) -> dict[str, Request]:
    """Step until every request finishes; returns the finished requests by id."""
    finished: dict[str, Request] = {}
    for _ in range(max_steps):
        if not scheduler.has_unfinished():
            return finished
        batch = scheduler.schedule()
        if batch.is_empty:
            raise AssertionError("unfinished requests but nothing scheduled: the scheduler hangs")
        for update in scheduler.update(batch, executor.execute(batch)):
            if update.request.is_finished:
                finished[update.request.request_id] = update.request
    raise AssertionError("requests did not finish")


# --- a small real byte-level BPE tokenizer ---------------------------------------------------------

TRAINING_TEXT = [
    "Hello world, this is firebox.",
    "The quick brown fox jumps over the lazy dog.",
    "Fire 🔥 and ice ❄️ in 東京 and 北京!",
    "Streaming text token by token, stop here. Goodbye.",
    "hello hello world world",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>"]


def build_tokenizer() -> Tokenizer:
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer)
    return Tokenizer(backend, SpecialTokens(eos_token="<|endoftext|>"))
