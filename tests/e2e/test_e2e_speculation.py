"""Speculative decoding on the real default model: predicted outputs through the real server and
prompt-lookup (n-gram) speculation offline give exactly the greedy output of plain decoding."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.helpers import GREEDY, MODEL, PROMPTS, offline_llm

pytestmark = pytest.mark.slow

CODE = """def add(a, b):
    return a + b


def subtract(a, b):
    return a - b
"""
TASKS = [
    "Rename the function subtract to minus in this code. Reply with the code only.\n\n" + CODE,
    "Repeat this sentence exactly: the quick brown fox jumps over the lazy dog.",
    "Write three short facts about the moon.",
]


def _greedy(client, task: str, **extra) -> tuple[str, object, dict]:
    # A fresh cache salt per request: prompts computed alike, so the only difference is speculation
    body = {"prompt_cache_isolation_key": uuid.uuid4().hex, **extra}
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": task}], max_tokens=80, temperature=0, extra_body=body
    )
    response = raw.parse()
    return response.choices[0].message.content, response.usage, raw.headers


def _with_one_word_changed(text: str) -> str:
    words = text.split(" ")
    middle = len(words) // 2
    words[middle] = "banana"
    return " ".join(words)


@pytest.mark.parametrize("task", TASKS)
def test_greedy_output_is_the_same_with_any_prediction(client, task: str) -> None:
    plain, _, _ = _greedy(client, task)
    predictions = {
        "right": plain,
        "one word wrong": _with_one_word_changed(plain),
        "all wrong": "Completely unrelated text about gardening, tulips and spring weather in the Netherlands.",
    }
    for name, prediction in predictions.items():
        text, usage, _ = _greedy(client, task, prediction={"type": "content", "content": prediction})
        assert text == plain, name


def test_usage_and_headers_report_the_prediction(client) -> None:
    plain, _, _ = _greedy(client, TASKS[0])
    text, usage, headers = _greedy(client, TASKS[0], prediction={"type": "content", "content": plain})
    details = usage.completion_tokens_details
    assert details.accepted_prediction_tokens > 0
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens <= int(
        headers["fireworks-speculation-prompt-tokens"]
    ) + usage.completion_tokens
    assert int(headers["fireworks-speculation-prompt-matched-tokens"]) == details.accepted_prediction_tokens


def test_streamed_speculative_output_matches(client) -> None:
    plain, _, _ = _greedy(client, TASKS[1])
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": TASKS[1]}],
        max_tokens=80,
        temperature=0,
        stream=True,
        prediction={"type": "content", "content": plain},
        extra_body={"prompt_cache_isolation_key": uuid.uuid4().hex},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == plain


@pytest.fixture(scope="module")
def ngram_llm(default_gguf):
    return offline_llm(speculative="ngram")


def test_ngram_speculation_gives_the_plain_greedy_output(ngram_llm, greedy_alone) -> None:
    outputs = ngram_llm.generate(list(PROMPTS), GREEDY)
    for prompt, output in zip(PROMPTS, outputs):
        assert output.outputs[0].token_ids == greedy_alone[prompt].token_ids, prompt
    stats = ngram_llm.core.stats()
    assert stats.num_draft_tokens > 0  # it did speculate
    assert ngram_llm.core.scheduler.kv.num_free_blocks == ngram_llm.core.scheduler.kv.num_blocks


def test_a_draft_model_gives_the_plain_greedy_output(default_gguf, greedy_alone) -> None:
    # The default model drafting for itself: every draft is accepted, and nothing changes
    llm = offline_llm(draft_model="default")
    prompts = list(PROMPTS[:3])
    for prompt, output in zip(prompts, llm.generate(prompts, GREEDY)):
        assert output.outputs[0].token_ids == greedy_alone[prompt].token_ids, prompt
    stats = llm.core.stats()
    assert stats.num_accepted_draft_tokens == stats.num_draft_tokens > 0
