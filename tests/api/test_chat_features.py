"""Chat completion parameters beyond the guide: each one reaches the engine or the response."""

from __future__ import annotations

import httpx
import orjson

MODEL = "accounts/fireworks/models/fake-chatml"
HELLO = [{"role": "user", "content": "Hello"}]


def test_sampling_parameters_reach_the_engine(client, server) -> None:
    client.chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0.5, top_p=0.8, frequency_penalty=0.3, presence_penalty=-0.2,
        logit_bias={"7": -100}, stop=["zzz", "qqq"], seed=3, max_completion_tokens=9,
        extra_body={"top_k": 20, "min_p": 0.1, "typical_p": 0.9, "repetition_penalty": 1.2, "ignore_eos": True},
    )  # fmt: skip
    sampling = server.engine.submitted[0].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p, sampling.typical_p) == (
        0.5,
        0.8,
        20,
        0.1,
        0.9,
    )
    assert (sampling.frequency_penalty, sampling.presence_penalty, sampling.repetition_penalty) == (0.3, -0.2, 1.2)
    assert sampling.logit_bias == ((7, -100.0),) and sampling.stop == ("zzz", "qqq")
    assert sampling.seed == 3 and sampling.max_tokens == 9 and sampling.ignore_eos


def test_seeds_make_n_choices_differ_and_the_request_repeat(client) -> None:
    def contents() -> list[str]:
        response = client.chat.completions.create(model=MODEL, messages=HELLO, n=3, seed=42)
        return [c.message.content for c in response.choices]

    first = contents()
    assert len(set(first)) == 3 and contents() == first


def test_stop_string_cuts_the_output(client, server) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HELLO, stop="model")
    assert response.choices[0].message.content == server.engine.reply.split("model")[0]
    assert response.choices[0].finish_reason == "stop"


def test_max_tokens_gives_finish_reason_length(client) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 3


def test_legacy_integer_logprobs_in_chat(client, server) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, extra_body={"logprobs": 2})
    legacy = response.choices[0].logprobs.model_dump()
    assert legacy["token_ids"] == server.engine.reply_ids(server.engine.submitted[0])[:4]
    assert len(legacy["tokens"]) == len(legacy["token_logprobs"]) == len(legacy["text_offset"]) == 4
    assert all(len(top) <= 3 for top in legacy["top_logprobs"])


def test_raw_output_and_return_token_ids(client, server) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=5,
        logprobs=True,
        extra_body={"raw_output": True, "return_token_ids": True},
    )
    prompt_ids = list(server.engine.submitted[0].prompt_token_ids)
    choice = response.choices[0].model_dump()
    raw = choice["raw_output"]
    assert response.model_dump()["prompt_token_ids"] == prompt_ids == raw["prompt_token_ids"]
    assert raw["prompt_fragments"] == [server.engine.tokenizer.decode(prompt_ids, skip_special_tokens=False)]
    assert raw["completion"] == choice["message"]["content"]
    assert raw["completion_token_ids"] == choice["token_ids"] == server.engine.reply_ids(server.engine.submitted[0])[:5]
    assert [e["token_id"] for e in raw["completion_logprobs"]["content"]] == raw["completion_token_ids"]


def test_streamed_raw_output_token_ids_and_first_chunk_prompt_ids(client, server) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=4,
            stream=True,
            extra_body={"raw_output": True, "return_token_ids": True},
        )
    )
    assert chunks[0].model_dump()["prompt_token_ids"] == list(server.engine.submitted[0].prompt_token_ids)
    streamed_ids = [i for c in chunks[1:] for i in c.choices[0].model_dump()["token_ids"]]
    assert streamed_ids == server.engine.reply_ids(server.engine.submitted[0])[:4]
    assert chunks[-1].choices[0].model_dump()["raw_output"]["completion_token_ids"] == streamed_ids


def test_include_usage_adds_a_final_chunk_without_choices(client) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    with_reason = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(with_reason) == 2
    assert with_reason[0].usage is None and with_reason[1].usage == chunks[-1].usage  # the last one carries the total
    assert chunks[-1].usage.completion_tokens == sum(
        1 for c in chunks if c.choices and c.choices[0].delta.content is not None and not c.choices[0].delta.role
    )


def test_n_streams_are_told_apart_by_index(client, server) -> None:
    texts = {0: "", 1: ""}
    for chunk in client.chat.completions.create(model=MODEL, messages=HELLO, n=2, seed=5, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    expected = [server.engine.tokenizer.decode(server.engine.reply_ids(r)) for r in server.engine.submitted]
    assert [texts[0], texts[1]] == expected and texts[0] != texts[1]


def test_prompt_truncate_len_keeps_the_system_prompt_and_the_last_turn(client, server) -> None:
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(10):
        messages += [
            {"role": "user", "content": f"old question {i}"},
            {"role": "assistant", "content": f"old answer {i}"},
        ]
    messages.append({"role": "user", "content": "newest question"})
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, extra_body={"prompt_truncate_len": 60})
    ids = server.engine.submitted[0].prompt_token_ids
    prompt = server.engine.tokenizer.decode(ids, skip_special_tokens=False)
    assert len(ids) <= 60 and "Be brief." in prompt and "newest question" in prompt and "old question 0" not in prompt


def test_priority_tier_cache_isolation_and_cache_hits(server) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    with httpx.Client(base_url=server.url) as http:
        first = http.post(
            "/v1/chat/completions", json={**body, "service_tier": "priority", "prompt_cache_isolation_key": "a"}
        )
        again = http.post("/v1/chat/completions", json={**body, "prompt_cache_isolation_key": "a"})
        other = http.post("/v1/chat/completions", json=body, headers={"x-prompt-cache-isolation-key": "b"})
    submitted = server.engine.submitted
    assert [r.priority for r in submitted] == [-1, 0, 0]
    assert [r.cache_salt for r in submitted] == ["fireworks\x00a", "fireworks\x00a", "fireworks\x00b"]  # account + key
    cached = [r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in (first, again, other)]
    assert cached[0] == 0 and cached[1] > 0 and cached[2] == 0  # no sharing across isolation keys


def test_content_as_text_parts(client, server) -> None:
    parts = [{"type": "text", "text": "What's the capital"}, {"type": "text", "text": "of France?"}]
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=1)
    prompt = server.engine.tokenizer.decode(server.engine.submitted[0].prompt_token_ids, skip_special_tokens=False)
    assert "What's the capital\nof France?" in prompt


def test_sse_framing_on_the_wire(server) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "stream": True}
    with (
        httpx.Client(base_url=server.url) as http,
        http.stream("POST", "/inference/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert (
            "fireworks-server-time-to-first-token" in response.headers
            and "fireworks-sampling-options" in response.headers
        )
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [orjson.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(p["object"] == "chat.completion.chunk" and "usage" in p for p in payloads)
    assert "perf_metrics" not in payloads[-1] and payloads[-1]["usage"]["total_tokens"] > 0
