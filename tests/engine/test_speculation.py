"""Speculative decoding in the engine core: drafts verified several per step give exactly the
output plain decoding gives, the KV cache keeps only what was accepted, and sampling keeps its
distribution (and, seeded, its very tokens)."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from firebox.config import SchedulerConfig
from firebox.engine.runner.sampling_batch import seeded_generator
from firebox.engine.speculation import DraftBudget, NgramProposer, PredictionProposer
from firebox.engine.types import ScheduledRequest
from tests.engine.engine_fakes import EOS, context_hash_token, make_core, make_engine_request

PROMPT = list(range(1, 30))


def _run(core, requests) -> tuple[dict[str, list[int]], int, dict]:
    for request in requests:
        core.add_request(request)
    tokens: dict[str, list[int]] = collections.defaultdict(list)
    last = {}
    steps = 0
    while core.has_unfinished():
        steps += 1
        for out in core.step():
            tokens[out.request_id].extend(out.new_token_ids)
            last[out.request_id] = out
        assert steps < 1000
    return dict(tokens), steps, last


def _plain(tokenizer, **sampling) -> list[int]:
    core, _ = make_core(tokenizer)
    tokens, _, _ = _run(core, [make_engine_request("r", PROMPT, **sampling)])
    return tokens["r"]


def test_a_right_prediction_gives_the_same_tokens_in_fewer_steps(tokenizer) -> None:
    expected = _plain(tokenizer, max_tokens=40)
    core, executor = make_core(tokenizer)
    tokens, steps, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=40, prediction_token_ids=tuple(expected))])
    assert tokens["r"] == expected
    assert steps < len(expected) // 2
    assert last["r"].num_accepted_draft_tokens == last["r"].num_draft_tokens > 0
    assert any(len(s.draft_token_ids) > 1 for b in executor.batches for s in b.requests)


@pytest.mark.parametrize("corrupt", ["one_token", "half", "all"])
def test_wrong_predictions_change_nothing_but_the_step_count(tokenizer, corrupt: str) -> None:
    expected = _plain(tokenizer, max_tokens=40)
    prediction = list(expected)
    if corrupt == "one_token":
        prediction[12] = (prediction[12] % 150) + 1
    elif corrupt == "half":
        prediction[20:] = [7] * 20
    else:
        prediction = [(t % 150) + 1 for t in expected]
    core, _ = make_core(tokenizer)
    tokens, _, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=40, prediction_token_ids=tuple(prediction))])
    assert tokens["r"] == expected
    assert last["r"].num_draft_tokens >= last["r"].num_accepted_draft_tokens


def test_the_kv_cache_keeps_exactly_the_accepted_tokens_and_frees_every_block(tokenizer) -> None:
    expected = _plain(tokenizer, max_tokens=30)
    core, executor = make_core(tokenizer)
    wrong_every_fourth = tuple(t if i % 4 else 3 for i, t in enumerate(expected))
    requests = [
        make_engine_request(f"r{i}", PROMPT, max_tokens=30, prediction_token_ids=wrong_every_fourth) for i in range(4)
    ]
    tokens, _, _ = _run(core, requests)
    # The fake model's next token hashes the context it reads back from the KV slots: one stale
    # draft left in the cache would change every token after it.
    assert all(t == expected for t in tokens.values())
    assert core.scheduler.kv.num_free_blocks == core.scheduler.kv.num_blocks


def test_a_stop_inside_the_accepted_drafts_ends_there(tokenizer) -> None:
    script = [5, 6, EOS, 8, 9]
    core, _ = make_core(tokenizer, next_token=lambda sched, context: script[min(sched.seed_offset, 4)])
    tokens, _, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=10, prediction_token_ids=(5, 6, EOS, 8))])
    assert tokens["r"] == [5, 6, EOS] and last["r"].finish_reason == "stop"
    core, _ = make_core(tokenizer, next_token=lambda sched, context: script[min(sched.seed_offset, 4)])
    tokens, _, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=2, prediction_token_ids=(5, 6, EOS, 8))])
    assert tokens["r"] == [5, 6] and last["r"].finish_reason == "length"


def test_ngram_speculation_from_the_config(tokenizer) -> None:
    repeating = lambda sched, context: context[-10] if len(context) >= 10 else 5  # noqa: E731: a loop the lookup can copy
    expected_core, _ = make_core(tokenizer, next_token=repeating)
    expected, plain_steps, _ = _run(expected_core, [make_engine_request("r", PROMPT, max_tokens=40)])
    core, _ = make_core(tokenizer, next_token=repeating)
    core.scheduler.config = dataclasses.replace(core.scheduler.config, speculative="ngram")
    tokens, steps, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=40)])
    assert tokens == expected and steps < plain_steps
    assert last["r"].num_accepted_draft_tokens > 0


def test_no_drafts_when_the_batch_is_large(tokenizer) -> None:
    expected = _plain(tokenizer, max_tokens=10)
    core, executor = make_core(tokenizer)
    core.scheduler.config = dataclasses.replace(core.scheduler.config, max_speculative_batch=2)
    requests = [make_engine_request(f"r{i}", PROMPT, max_tokens=10, prediction_token_ids=tuple(expected)) for i in range(3)]
    _run(core, requests)
    assert not any(s.draft_token_ids for b in executor.batches for s in b.requests)


VOCAB = 6


def _probabilities(context: list[int]) -> torch.Tensor:
    """A tiny model: the next-token distribution depends on the last token."""
    weights = torch.tensor([1.0 + ((context[-1] * 7 + t * 3) % 5) for t in range(VOCAB)])
    weights[EOS] = 0.0
    return weights / weights.sum()


def _sampled_token(sched: ScheduledRequest, context: list[int]) -> int:
    """Draws as the runner draws: the uniform of (seed, output position), nothing else."""
    generator = seeded_generator(sched.sampling.seed, sched.seed_offset, torch.device("cpu"))
    return int(torch.multinomial(_probabilities(context), 1, generator=generator))


def test_sampled_speculation_keeps_the_distribution_and_seeded_tokens(tokenizer) -> None:
    num_seeds = 400
    counts_plain, counts_spec = collections.Counter(), collections.Counter()
    for seed in range(num_seeds):
        plain_core, _ = make_core(tokenizer, next_token=_sampled_token)
        spec_core, _ = make_core(tokenizer, next_token=_sampled_token)
        plain, _, _ = _run(plain_core, [make_engine_request("r", [1, 2], max_tokens=3, temperature=1.0, seed=seed)])
        spec, _, _ = _run(
            spec_core, [make_engine_request("r", [1, 2], max_tokens=3, temperature=1.0, seed=seed, prediction_token_ids=(3, 4, 1))]
        )
        assert spec["r"] == plain["r"]  # same seed, same tokens: the drafts changed nothing
        counts_plain[tuple(plain["r"][:2])] += 1
        counts_spec[tuple(spec["r"][:2])] += 1
    # and the tokens follow the model: the first token's frequencies match its probabilities
    first = collections.Counter(pair[0] for pair in counts_spec.elements())
    expected = _probabilities([1, 2])
    for token in range(VOCAB):
        assert abs(first[token] / num_seeds - float(expected[token])) < 0.08


def test_lookup_proposers() -> None:
    assert PredictionProposer((1, 2, 3, 4, 5)).propose([], [], 3) == [1, 2, 3]
    # the output left the prediction at "9" and rejoined it at "3, 4": drafting resumes after them
    assert PredictionProposer((1, 2, 3, 4, 5, 6)).propose([], [1, 9, 3, 4], 2) == [5, 6]
    assert NgramProposer().propose([7, 8, 9, 10, 11], [7, 8], 2) == [9, 10]
    assert NgramProposer().propose([1, 2, 3], [4, 5], 2) == []


def test_the_draft_budget_grows_with_acceptance_and_shrinks_without() -> None:
    budget = DraftBudget(num_tokens=4)
    budget.record(4, 4)
    assert budget.num_tokens == 8
    budget.record(8, 8)
    assert budget.num_tokens == 8  # capped
    budget.record(8, 1)
    assert budget.num_tokens == 2
    assert budget.next_size() == 2


def test_drafts_pause_after_proposals_that_all_miss() -> None:
    budget = DraftBudget(num_tokens=4)
    sizes = []
    for _ in range(3):  # three wholly rejected proposals in a row: pauses of 1, 3, then 7 steps
        budget.record(budget.num_tokens, 0)
        while (size := budget.next_size()) == 0:
            sizes.append(0)
        sizes.append(size)
    assert sizes == [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    budget.record(1, 1)  # a hit ends the pauses
    assert budget.next_size() == 2 and budget.next_size() == 2
    prediction = DraftBudget(max_pause=0)  # a prediction realigns by content: no pause
    prediction.record(4, 0)
    assert prediction.next_size() == 1


def test_a_predictions_budget_grows_to_16() -> None:
    predicted = DraftBudget(num_tokens=8, max_tokens=16)  # a prediction's drafts run longer
    predicted.record(8, 8)
    predicted.record(16, 16)
    assert predicted.num_tokens == 16


def test_constrained_speculation_checks_the_grammar_at_every_drafted_position(tokenizer) -> None:
    from tests.engine.test_structured_output import allowed_tokens
    from firebox.engine.types import GrammarSyntax, StructuredOutputSpec

    spec = StructuredOutputSpec(GrammarSyntax.LARK, 'start: "hello " ("world" | "fox") " and " ("world" | "fox")')

    def run(prediction: tuple[int, ...]) -> tuple[str, object]:
        core, executor = make_core(tokenizer)

        def highest_allowed(sched: ScheduledRequest, context: list[int]) -> int:
            mask = executor.batches[-1].token_bitmask
            j = sched.seed_offset - len(sched.output_token_ids)  # which drafted position this is
            row = mask.request_ids.index(sched.request_id) + j
            allowed = allowed_tokens(mask, row, tokenizer.vocab_size)
            return int(allowed.nonzero().flatten()[-1])

        executor.next_token = highest_allowed
        tokens, _, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=30, structured_output=spec, prediction_token_ids=prediction)])
        return tokenizer.decode(tokens["r"]), last["r"]

    plain, _ = run(())
    assert plain in {f"hello {a} and {b}" for a in ("world", "fox") for b in ("world", "fox")}
    other = "fox" if plain.endswith("world") else "world"
    for predicted_text in (plain, plain[: -len(other) - 1] + " " + other, "hello cat and dog"):
        text, last = run(tuple(tokenizer.encode(predicted_text)))
        assert text == plain, predicted_text
    right, last = run(tuple(tokenizer.encode(plain)))
    assert last.num_accepted_draft_tokens > 0


@pytest.mark.parametrize("draft_is_good", [True, False])
def test_a_draft_model_drafts_and_changes_nothing_but_the_step_count(tokenizer, draft_is_good: bool) -> None:
    from firebox.engine.speculation import DraftModelProposer

    expected = _plain(tokenizer, max_tokens=30)
    draft_token = context_hash_token if draft_is_good else (lambda sched, context: (context[-1] * 3) % 150 + 1)
    draft_core, _ = make_core(tokenizer, next_token=draft_token)
    core, _ = make_core(tokenizer)
    core.scheduler.config = dataclasses.replace(core.scheduler.config, speculative="draft")
    core.draft_proposer = DraftModelProposer(draft_core)
    tokens, steps, last = _run(core, [make_engine_request("r", PROMPT, max_tokens=30)])
    assert tokens["r"] == expected
    assert last["r"].num_draft_tokens > 0
    if draft_is_good:
        assert last["r"].num_accepted_draft_tokens == last["r"].num_draft_tokens and steps < 15
    assert draft_core.scheduler.kv.num_free_blocks == draft_core.scheduler.kv.num_blocks
