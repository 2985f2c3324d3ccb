"""Constrained decoding: grammars compiled off the step loop, one matcher per request.

llguidance (Rust, one small wheel, no dependencies) does the grammar work: it compiles a JSON
schema, a Lark or GBNF grammar or a regex against this model's vocabulary in about a millisecond,
and computes a request's allowed-token bitmask in tens of microseconds. firebox only schedules it:
- `GrammarCompiler` compiles on its own worker thread (llguidance drops the GIL while it builds),
  caching each spec's validated grammar, so a repeated schema compiles once; a request whose
  grammar is not ready waits in the queue without holding back anyone else;
- `RequestGrammar` is one request's matcher: the core fills its bitmask row before each sampling
  step and the scheduler advances it with every accepted token;
- the runner's sampler applies the bitmask rows in its one batched pass (`runner/sampler.py`).
Torch-free: it runs in the engine core.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
from llguidance.gbnf_to_lark import any_to_lark
from llguidance.numpy import (
    allocate_token_bitmask,
    fill_next_token_bitmask,
    fill_next_token_bitmask_par,
    fill_next_token_bitmask_par_with_draft_tokens,
)

from firebox.engine.types import COMPACT_JSON_OPTIONS, EngineError, GrammarSyntax, StructuredOutputSpec, TokenBitmask
from firebox.loader.tokenizer import Tokenizer

MAX_CACHED_GRAMMARS = 256


class GrammarError(EngineError):
    """A schema or grammar that cannot be compiled or enforced; the message says what and where."""


def to_llguidance(spec: StructuredOutputSpec) -> str:
    """The spec as an llguidance grammar (not yet checked against the vocabulary)."""
    try:
        match spec.syntax:
            case GrammarSyntax.JSON_SCHEMA:
                return llguidance.LLMatcher.grammar_from_json_schema(spec.source, defaults=COMPACT_JSON_OPTIONS)
            case GrammarSyntax.LARK:
                return llguidance.LLMatcher.grammar_from_lark(spec.source)
            case GrammarSyntax.GBNF:
                return llguidance.LLMatcher.grammar_from_lark(any_to_lark(spec.source))
            case GrammarSyntax.REGEX:
                return llguidance.LLMatcher.grammar_from_regex(spec.source)
    except Exception as exc:  # the converters raise ValueError, AssertionError, KeyError...
        raise GrammarError(f"invalid {spec.syntax}: {exc}") from exc
    raise GrammarError(f"unknown grammar syntax {spec.syntax!r}")


class GrammarCompiler:
    """Compiles specs for one model's vocabulary on a worker thread, caching validated grammars."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_token_ids = list(eos_token_ids)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firebox-grammar")
        self._lock = threading.Lock()  # guards _grammars (worker thread and core thread)
        self._grammars: OrderedDict[StructuredOutputSpec, str | GrammarError] = OrderedDict()

    @functools.cached_property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """Built on first use (a quarter of a second for a 49k vocabulary), on the worker."""
        return llguidance.LLTokenizer(
            self._tokenizer.to_json(), n_vocab=self._vocab_size, eos_token=self._eos_token_ids
        )

    @functools.cached_property
    def _mask_executor(self) -> llguidance.LLExecutor:
        return llguidance.LLExecutor(num_threads=2)

    def submit(self, spec: StructuredOutputSpec) -> RequestGrammar:
        """A request's grammar, compiling in the background; poll it with `is_ready`."""
        return RequestGrammar(self._pool.submit(self._new_matcher, spec))

    def compile(self, spec: StructuredOutputSpec) -> str:
        """The validated llguidance grammar of `spec` (cached); raises GrammarError."""
        with self._lock:
            cached = self._grammars.get(spec)
            if cached is not None:
                self._grammars.move_to_end(spec)
        if cached is None:
            cached = self._validated(spec)
            with self._lock:
                self._grammars[spec] = cached
                while len(self._grammars) > MAX_CACHED_GRAMMARS:
                    self._grammars.popitem(last=False)
        if isinstance(cached, GrammarError):
            raise cached
        return cached

    def fill_bitmask(self, grammars: Sequence[tuple[str, RequestGrammar, Sequence[int]]]) -> TokenBitmask:
        """The allowed tokens of each (request id, grammar, drafts) at its next sampled position and,
        for drafts (which its grammar accepts), at the position after each draft: 1 + len(drafts) rows."""
        num_rows = sum(1 + len(drafts) for _, _, drafts in grammars)
        bitmask = allocate_token_bitmask(num_rows, self._vocab_size)
        request_ids: list[str] = []
        plain, drafted = [], []
        for request_id, grammar, drafts in grammars:
            (drafted if drafts else plain).append((grammar.matcher, len(request_ids), list(drafts)))
            request_ids.extend([request_id] * (1 + len(drafts)))
        if len(plain) == 1:  # one row: the executor's hand-off would cost more than the mask
            matcher, row, _ = plain[0]
            fill_next_token_bitmask(matcher, bitmask, row)
        elif plain:
            fill_next_token_bitmask_par(self._mask_executor, [(m, row) for m, row, _ in plain], bitmask)
        if drafted:
            fill_next_token_bitmask_par_with_draft_tokens(self._mask_executor, drafted, bitmask)
        return TokenBitmask(request_ids, bitmask)

    def wait_for_any(self, grammars: Sequence[RequestGrammar], timeout: float) -> None:
        """Block until one of the grammars is compiled (or failed), or `timeout` passes."""
        futures = [g.future for g in grammars]
        concurrent.futures.wait(futures, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)

    def _validated(self, spec: StructuredOutputSpec) -> str | GrammarError:
        try:
            grammar = to_llguidance(spec)
        except GrammarError as exc:
            return exc
        error = llguidance.LLMatcher.validate_grammar(grammar, self.ll_tokenizer)
        return GrammarError(f"invalid {spec.syntax}: {error}") if error else grammar

    def _new_matcher(self, spec: StructuredOutputSpec) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self.ll_tokenizer, self.compile(spec), log_level=0)
        if matcher.is_error():
            raise GrammarError(f"invalid {spec.syntax}: {matcher.get_error()}")
        return matcher


class RequestGrammar:
    """One request's grammar state: compiling, then a matcher advanced by each accepted token."""

    def __init__(self, future: Future[llguidance.LLMatcher]) -> None:
        self.future = future

    @property
    def is_compiled(self) -> bool:
        """Compiled or failed: nothing left to wait for."""
        return self.future.done()

    @property
    def is_ready(self) -> bool:
        return self.future.done() and self.future.exception() is None

    @property
    def error(self) -> str | None:
        """Why the grammar cannot run (compile failure, or a token it refused), else None."""
        if not self.future.done():
            return None
        exc = self.future.exception()
        if exc is not None:
            return str(exc) if isinstance(exc, GrammarError) else f"grammar compilation failed: {exc!r}"
        matcher = self.future.result()
        return f"the grammar refused the output: {matcher.get_error()}" if matcher.is_error() else None

    @property
    def matcher(self) -> llguidance.LLMatcher:
        return self.future.result()

    @property
    def is_terminated(self) -> bool:
        """The output is complete: the grammar accepts no token but EOS."""
        return self.matcher.is_stopped()

    def accept(self, token_id: int) -> bool:
        """Advance by a sampled token; False (and `error` set) if the grammar refuses it."""
        return self.matcher.consume_token(token_id)

    def cancel(self) -> None:
        self.future.cancel()

