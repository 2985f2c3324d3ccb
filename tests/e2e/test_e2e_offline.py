"""The offline API (`from firebox import LLM, SamplingParams`) over the real default model:
generate and chat, continuous batching that does not change results, seeds, stop strings,
max_tokens and min_tokens."""

from __future__ import annotations

import pytest

from firebox import SamplingParams
from tests.e2e.helpers import HELLO, MODEL, PROMPTS, greedy

pytestmark = pytest.mark.slow



def sampled(seed: int | None) -> SamplingParams:
    return SamplingParams(max_tokens=16, temperature=1.0, seed=seed)


def test_generate_returns_text_tokens_and_prompt(llm) -> None:
    (result,) = llm.generate(["The capital of France is"], greedy(8))
    completion = result.outputs[0]
    assert completion.text.startswith(" Paris")  # the real weights, not noise
    assert completion.text == llm.tokenizer.decode(completion.token_ids)
    assert len(completion.token_ids) == 8 and completion.finish_reason == "length"
    assert result.prompt == "The capital of France is"
    assert result.prompt_token_ids == llm.tokenizer.encode("The capital of France is", add_special_tokens=True)


def test_chat_equals_the_server_and_ends_at_eos(llm, client) -> None:
    (result,) = llm.chat(HELLO, greedy(40))
    completion = result.outputs[0]
    assert completion.finish_reason == "stop" and completion.token_ids[-1] in llm.model_info.eos_token_ids
    assert completion.text == llm.tokenizer.decode(completion.token_ids[:-1]) and completion.text
    served = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0)
    assert served.choices[0].message.content == completion.text
    assert served.usage.prompt_tokens == len(result.prompt_token_ids)
    assert served.usage.completion_tokens == len(completion.token_ids)  # EOS counts, as generated


def test_a_batch_of_eight_equals_each_prompt_alone(llm, greedy_alone) -> None:
    batch = [r.outputs[0] for r in llm.generate(list(PROMPTS), greedy())]
    alone = [greedy_alone[p] for p in PROMPTS]
    assert [c.token_ids for c in batch] == [c.token_ids for c in alone]
    assert [c.text for c in batch] == [c.text for c in alone]
    assert len({c.text for c in batch}) == len(PROMPTS)


def test_seeded_sampling_repeats_whatever_the_batch(llm) -> None:
    story, other = PROMPTS[1], PROMPTS[5]
    (alone,) = llm.generate([story], sampled(7))
    batch = llm.generate([other, story, story, other], [sampled(None), sampled(7), sampled(8), sampled(7)])
    assert batch[1].outputs[0].token_ids == alone.outputs[0].token_ids
    assert batch[1].outputs[0].text == alone.outputs[0].text
    assert batch[2].outputs[0].text != alone.outputs[0].text  # another seed, another story
    (again,) = llm.generate([other], sampled(7))
    assert batch[3].outputs[0].token_ids == again.outputs[0].token_ids


def test_stop_strings_cut_the_text(llm, greedy_alone) -> None:
    prompt = PROMPTS[1]
    full = greedy_alone[prompt].text
    start = len(full) // 2
    stop = full[start : start + 4]  # mid-text, usually across a token boundary
    cut = full.index(stop)
    dropped, kept = llm.generate(
        [prompt, prompt], [greedy(stop=(stop,)), greedy(stop=(stop,), include_stop_str_in_output=True)]
    )
    assert dropped.outputs[0].text == full[:cut]
    assert kept.outputs[0].text == full[: cut + len(stop)]
    for result in (dropped, kept):
        assert result.outputs[0].finish_reason == "stop" and result.outputs[0].stop_reason == stop


def test_max_tokens_is_respected(llm) -> None:
    results = llm.generate(list(PROMPTS[:3]), [greedy(1), greedy(5, ignore_eos=True), greedy(0)])
    assert [len(r.outputs[0].token_ids) for r in results] == [1, 5, 0]
    assert [r.outputs[0].finish_reason for r in results] == ["length", "length", "length"]
    assert results[2].outputs[0].text == ""


def test_min_tokens_holds_back_a_stop_token(llm, greedy_alone) -> None:
    prompt = PROMPTS[3]
    reference = greedy_alone[prompt].token_ids
    stop_token = reference[2]
    assert stop_token not in reference[:2]
    plain, held = llm.generate(
        [prompt, prompt], [greedy(stop_token_ids=(stop_token,)), greedy(stop_token_ids=(stop_token,), min_tokens=6)]
    )
    assert plain.outputs[0].token_ids == reference[:3]  # the stop token ends it at once...
    assert plain.outputs[0].finish_reason == "stop" and plain.outputs[0].stop_reason == stop_token
    assert plain.outputs[0].text == llm.tokenizer.decode(reference[:2])  # ...and is not shown
    tokens = held.outputs[0].token_ids
    assert tokens[:2] == reference[:2] and stop_token not in tokens[:6] and len(tokens) >= 6


def test_min_tokens_holds_back_eos(llm) -> None:
    (reference,) = llm.chat(HELLO, greedy(40))
    tokens = reference.outputs[0].token_ids
    num_before_eos = len(tokens) - 1
    (longer,) = llm.chat(HELLO, greedy(num_before_eos + 4, min_tokens=num_before_eos + 4))
    extended = longer.outputs[0].token_ids
    assert extended[:num_before_eos] == tokens[:num_before_eos]
    assert len(extended) == num_before_eos + 4 and longer.outputs[0].finish_reason == "length"
    assert not set(extended) & set(llm.model_info.eos_token_ids)
