"""The examples of the Fireworks "Querying text models" guide with the real `openai` client
against `firebox serve` and the real model. Only base_url and api_key differ from the guide,
plus the model name (the guide's is not served here) and a max_tokens that bounds test time."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import HELLO, MODEL, long_stream_body, wait_until_idle

pytestmark = pytest.mark.slow

STORY = [{"role": "user", "content": "Tell me a story"}]
MAX_TOKENS = 24


def test_multi_turn_conversation(server, client) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "What's its population?"},
    ]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
    print(response.choices[0].message.content)
    assert response.choices[0].message.content and response.choices[0].message.role == "assistant"
    prompt_ids = server.tokenize(messages=messages)  # the whole history, templated
    assert response.usage.prompt_tokens == len(prompt_ids)
    prompt = server.detokenize(prompt_ids)
    assert "The capital of France is Paris." in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_streaming_with_usage_in_the_final_chunk(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=STORY, stream=True, max_tokens=MAX_TOKENS, temperature=0
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c for c in chunks if c.usage] == [chunks[-1]] and chunks[-1].choices[0].finish_reason
    usage = chunks[-1].usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    whole = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=MAX_TOKENS, temperature=0)
    assert text == whole.choices[0].message.content  # streamed or not, the same greedy text
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)


def test_closing_a_stream_aborts_it_in_the_engine(server, client) -> None:
    aborted_before = server.metric("firebox:request_success_total", finished_reason="abort")
    generated_before = server.metric("firebox:generation_tokens_total")
    body = long_stream_body()
    stream = client.chat.completions.create(
        model=MODEL, messages=body["messages"], stream=True, max_tokens=body["max_tokens"],
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 5:
            stream.close()
            break
    assert wait_until_idle(server), "the closed stream still runs in the engine or holds KV blocks"
    assert server.metric("firebox:kv_cache_usage") == 0.0
    assert server.metric("firebox:request_success_total", finished_reason="abort") == aborted_before + 1
    generated = server.metric("firebox:generation_tokens_total") - generated_before
    assert 5 <= generated < body["max_tokens"]  # only what was generated before the abort counts


def test_usage_and_perf_headers(client) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS)
    response = raw.parse()
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    headers = raw.headers
    assert int(headers["fireworks-prompt-tokens"]) == usage.prompt_tokens
    assert int(headers["fireworks-cached-prompt-tokens"]) == usage.prompt_tokens_details.cached_tokens
    ttft = float(headers["fireworks-server-time-to-first-token"])
    assert 0 < ttft <= float(headers["fireworks-server-processing-time"])
    assert float(headers["fireworks-prefill-queue-duration"]) >= 0


def test_perf_metrics_in_the_streamed_body(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello, world!"}], stream=True, max_tokens=MAX_TOKENS,
        extra_body={"perf_metrics_in_response": True},
    )  # fmt: skip
    finals = [c for c in stream if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].usage is not None
    metrics = finals[0].perf_metrics
    assert metrics["prompt-tokens"] == finals[0].usage.prompt_tokens
    assert 0 < metrics["server-time-to-first-token"] <= metrics["server-processing-time"]


def test_sampling_options_header(client) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS)
    options = json.loads(raw.headers.get("fireworks-sampling-options"))
    assert {k: options[k] for k in ("top_k", "min_p", "typical_p")} == {"top_k": 0, "min_p": 0.0, "typical_p": 1.0}
    assert raw.parse().choices[0].message.content
    explicit = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=7, temperature=0.3, top_p=0.5, extra_body={"top_k": 4}
    )
    options = json.loads(explicit.headers["fireworks-sampling-options"])
    assert (options["temperature"], options["top_p"], options["top_k"], options["max_tokens"]) == (0.3, 0.5, 4, 7)


def test_multiple_generations_follow_seed_plus_index(client) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a joke"}], "max_tokens": 12}
    response = client.chat.completions.create(**request, n=3, seed=11)
    texts = [c.message.content for c in response.choices]
    assert [c.index for c in response.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert [c.message.content for c in client.chat.completions.create(**request, n=3, seed=11).choices] == texts
    second = client.chat.completions.create(**request, seed=12)  # choice i samples with seed + i
    assert second.choices[0].message.content == texts[1]


def test_logprobs_with_top_alternatives(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, logprobs=True, top_logprobs=5, max_tokens=MAX_TOKENS, temperature=0
    )
    choice = response.choices[0]
    content = choice.logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 5
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert (entry.token, entry.logprob) == (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob)  # greedy
    shown = content[:-1] if choice.finish_reason == "stop" else content  # the EOS token is not in the text
    assert "".join(entry.token for entry in shown) == choice.message.content


def test_echo_returns_the_formatted_prompt(server, client) -> None:
    echoed = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS, temperature=0, extra_body={"echo": True}
    )
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=MAX_TOKENS, temperature=0)
    prompt = server.detokenize(server.tokenize(messages=HELLO))
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert echoed.choices[0].message.content == prompt + plain.choices[0].message.content
