"""The examples of the Fireworks "Querying text models" guide, run unchanged with the `openai`
client against firebox (only base_url and api_key differ)."""

from __future__ import annotations

import json

from tests.conftest import wait_until

MODEL = "accounts/fireworks/models/fake-chatml"


def test_multi_turn_conversation(client, server) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "What's its population?"},
    ]
    response = client.chat.completions.create(model=MODEL, messages=messages)
    assert response.choices[0].message.content == server.engine.reply
    assert response.choices[0].message.role == "assistant" and response.choices[0].finish_reason == "stop"
    prompt = server.engine.tokenizer.decode(server.engine.submitted[0].prompt_token_ids, skip_special_tokens=False)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "The capital of France is Paris." in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_streaming(client, server) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices[0].delta.content)
    assert text == server.engine.reply
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


def test_aborting_a_stream_stops_generation(client, server) -> None:
    server.engine.token_delay = 0.005
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        max_tokens=2000,
        extra_body={"ignore_eos": True},
    )
    received = 0
    for _ in stream:
        received += 1
        if received == 5:
            stream.close()
            break
    assert wait_until(lambda: not server.engine.running), "the engine still runs the aborted request"
    assert len(server.engine.aborted) == 1
    assert wait_until(lambda: len(server.records) == 1)
    record = server.records[0]
    assert record.aborted and 3 <= record.completion_tokens < 2000  # only what was generated is counted


def test_usage_non_streaming_and_headers(client, server) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    response = raw.parse()
    usage = response.usage
    assert usage.prompt_tokens == len(server.engine.submitted[0].prompt_token_ids)
    assert usage.completion_tokens == len(server.engine.reply_ids(server.engine.submitted[0])) + 1  # + EOS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    headers = raw.headers
    assert int(headers["fireworks-prompt-tokens"]) == usage.prompt_tokens
    assert int(headers["fireworks-cached-prompt-tokens"]) == 0
    for name in ("server-time-to-first-token", "server-processing-time", "prefill-queue-duration"):
        assert float(headers[f"fireworks-{name}"]) >= 0
    assert float(headers["fireworks-server-processing-time"]) >= float(headers["fireworks-server-time-to-first-token"])
    assert len(headers["x-request-id"]) >= 16


def test_usage_in_the_final_stream_chunk(client, server) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True)
    chunks = list(stream)
    final = [c for c in chunks if c.usage]
    assert len(final) == 1 and final[0] is chunks[-1] and final[0].choices[0].finish_reason == "stop"
    assert final[0].usage.total_tokens == final[0].usage.prompt_tokens + final[0].usage.completion_tokens
    assert final[0].usage.completion_tokens == len(server.engine.reply_ids(server.engine.submitted[0])) + 1


def test_perf_metrics_in_the_streamed_body(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello, world!"}],
        stream=True,
        extra_body={"perf_metrics_in_response": True},
    )
    finals = [c for c in stream if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].usage is not None
    metrics = finals[0].perf_metrics
    assert metrics["prompt-tokens"] == finals[0].usage.prompt_tokens
    for key in (
        "cached-prompt-tokens",
        "server-time-to-first-token",
        "server-processing-time",
        "prefill-queue-duration",
    ):
        assert metrics[key] >= 0


def test_perf_metrics_in_the_non_streamed_body(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], extra_body={"perf_metrics_in_response": True}
    )
    assert response.perf_metrics["prompt-tokens"] == response.usage.prompt_tokens
    assert response.perf_metrics["server-processing-time"] >= response.perf_metrics["server-time-to-first-token"]
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    assert "perf_metrics" not in plain.model_dump()


def test_sampling_options_header(client, server) -> None:
    server.engine.generation_defaults = {"temperature": 0.7, "top_p": 0.9}
    response = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    options = json.loads(response.headers.get("fireworks-sampling-options"))
    assert options["temperature"] == 0.7 and options["top_p"] == 0.9  # from generation_config
    assert options["top_k"] == 0 and options["min_p"] == 0.0 and options["typical_p"] == 1.0  # firebox defaults
    completion = response.parse()
    assert completion.choices[0].message.content
    explicit = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], temperature=0.2, max_tokens=7
    )
    options = json.loads(explicit.headers["fireworks-sampling-options"])
    assert options["temperature"] == 0.2 and options["max_tokens"] == 7


def test_multiple_generations(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a joke"}], n=3
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.message.content for c in response.choices)


def test_logprobs_with_top_alternatives(client, server) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], logprobs=True, top_logprobs=5
    )
    content = response.choices[0].logprobs.content
    assert [c.token_id for c in content] == server.engine.reply_ids(server.engine.submitted[0]) + [2]
    for entry in content:
        assert entry.logprob < 0 and len(entry.top_logprobs) == 5
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    assert "".join(c.token for c in content[:-1]) == response.choices[0].message.content


def test_echo_returns_the_formatted_prompt(client, server) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], extra_body={"echo": True}
    )
    content = response.choices[0].message.content
    prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    prompt += "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert content == prompt + server.engine.reply
