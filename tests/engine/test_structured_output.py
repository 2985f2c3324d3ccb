"""Constrained decoding in the engine core: grammars compile off the step loop, the executor gets
the allowed tokens of constrained rows only, the output follows the grammar and ends with it."""

from __future__ import annotations

import json
from concurrent.futures import Future

import pytest
import torch

from firebox.engine.runner.grammar_mask import unpack_bitmask
from firebox.engine.structured_output import GrammarCompiler, RequestGrammar
from firebox.engine.types import FinishReason, GrammarSyntax, ScheduledRequest, StructuredOutputSpec
from tests.engine.engine_fakes import EOS, FakeExecutor, context_hash_token, make_core, make_engine_request

YES_NO = StructuredOutputSpec(GrammarSyntax.GBNF, 'root ::= "hello " ("world" | "fox")')
OBJECT = StructuredOutputSpec(
    GrammarSyntax.JSON_SCHEMA,
    json.dumps({"type": "object", "properties": {"w": {"enum": ["hello", "world"]}}, "required": ["w"], "additionalProperties": False}),
)


def allowed_tokens(mask, row: int, vocab_size: int):  # [vocab] bool: what the runner's mask lets through
    return unpack_bitmask(torch.from_numpy(mask.bitmask[row : row + 1]), vocab_size)[0]


def _prefer_the_last_allowed_token(executor: FakeExecutor, vocab_size: int):
    """A model that wants token `vocab_size - 1` (never allowed by these grammars) and otherwise
    takes the highest token id the bitmask allows: only the mask keeps its output valid."""

    def next_token(sched: ScheduledRequest, context: list[int]) -> int:
        mask = executor.batches[-1].token_bitmask
        if mask is None or sched.request_id not in mask.request_ids:
            return context_hash_token(sched, context)
        allowed = allowed_tokens(mask, mask.request_ids.index(sched.request_id), vocab_size)
        return int(allowed.nonzero().flatten()[-1])

    return next_token


def _run(core) -> dict[str, list]:
    outputs: dict[str, list] = {}
    for _ in range(500):
        if not core.has_unfinished():
            return outputs
        for out in core.step():
            outputs.setdefault(out.request_id, []).append(out)
    raise AssertionError("requests did not finish")


def _text(outputs) -> str:
    return "".join(o.text_delta for o in outputs)


@pytest.fixture
def core_and_executor(tokenizer):
    core, executor = make_core(tokenizer)
    executor.next_token = _prefer_the_last_allowed_token(executor, tokenizer.vocab_size)
    return core, executor


@pytest.mark.parametrize("spec", [YES_NO, OBJECT])
def test_constrained_output_follows_the_grammar_and_ends_with_it(core_and_executor, spec) -> None:
    core, executor = core_and_executor
    core.add_request(make_engine_request("c", [5, 6, 7], max_tokens=40, structured_output=spec))
    outputs = _run(core)["c"]
    final = outputs[-1]
    assert final.finish_reason is FinishReason.STOP and final.stop_reason is None
    text = _text(outputs)
    if spec is YES_NO:
        assert text in ("hello world", "hello fox")
    else:
        assert json.loads(text)["w"] in ("hello", "world")
    assert EOS not in [t for o in outputs for t in o.new_token_ids]  # the grammar's end, not EOS, ended it


def test_only_the_constrained_rows_that_sample_get_a_bitmask(core_and_executor) -> None:
    core, executor = core_and_executor
    core.add_request(make_engine_request("free", [1, 2, 3], max_tokens=4))
    core.add_request(make_engine_request("c", list(range(1, 60)), max_tokens=20, structured_output=YES_NO))
    _run(core)
    for batch in executor.batches:
        sampling_constrained = [s.request_id for s in batch.requests if s.sample and s.request_id == "c"]
        masked = batch.token_bitmask.request_ids if batch.token_bitmask is not None else []
        assert masked == sampling_constrained  # never "free", never a non-final prefill chunk of "c"
    assert any(batch.token_bitmask is not None for batch in executor.batches)


def test_a_grammar_that_does_not_compile_fails_its_request_only(core_and_executor) -> None:
    core, _ = core_and_executor
    bad = StructuredOutputSpec(GrammarSyntax.JSON_SCHEMA, json.dumps({"type": "object", "properties": {"a": {"not": {}}}}))
    core.add_request(make_engine_request("bad", [1, 2], max_tokens=5, structured_output=bad))
    core.add_request(make_engine_request("free", [1, 2], max_tokens=5))
    outputs = _run(core)
    failed = outputs["bad"]
    assert len(failed) == 1 and failed[0].finish_reason is FinishReason.ERROR and not failed[0].new_token_ids
    assert "not" in failed[0].stop_reason
    assert outputs["free"][-1].finish_reason is FinishReason.LENGTH
    assert core.scheduler.kv.usage == 0


def test_a_request_waits_for_its_grammar_while_others_run(core_and_executor, monkeypatch) -> None:
    core, _ = core_and_executor
    pending: Future = Future()
    compiler: GrammarCompiler = core.grammars
    monkeypatch.setattr(compiler, "submit", lambda spec: RequestGrammar(pending))
    core.add_request(make_engine_request("c", [1, 2], max_tokens=20, structured_output=YES_NO))
    core.add_request(make_engine_request("free", [3, 4], max_tokens=3))
    outputs: dict[str, list] = {}
    for _ in range(20):
        for out in core.step():
            outputs.setdefault(out.request_id, []).append(out)
    assert outputs["free"][-1].finished and "c" not in outputs  # it ran to the end; c never started
    assert core.scheduler.requests["c"].num_computed_tokens == 0
    pending.set_result(_matcher(compiler))
    outputs = _run(core)
    assert _text(outputs["c"]) in ("hello world", "hello fox")


def test_an_abort_while_compiling_frees_the_request(core_and_executor, monkeypatch) -> None:
    core, _ = core_and_executor
    pending: Future = Future()
    monkeypatch.setattr(core.grammars, "submit", lambda spec: RequestGrammar(pending))
    core.add_request(make_engine_request("c", [1, 2], max_tokens=20, structured_output=YES_NO))
    core.step()
    [aborted] = core.abort(["c"])
    assert aborted.finish_reason is FinishReason.ABORT
    core.step()
    assert not core.has_unfinished() and pending.cancelled()


def test_the_same_spec_compiles_once(tokenizer) -> None:
    compiler = GrammarCompiler(tokenizer, tokenizer.vocab_size, (EOS,))
    first, second = compiler.submit(OBJECT), compiler.submit(OBJECT)
    first.future.result(), second.future.result()
    assert len(compiler._grammars) == 1
    assert first.matcher is not second.matcher  # one grammar, one matcher per request


def _matcher(compiler: GrammarCompiler):
    import llguidance

    return llguidance.LLMatcher(compiler.ll_tokenizer, compiler.compile(YES_NO))
