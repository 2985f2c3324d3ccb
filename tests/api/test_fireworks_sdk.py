"""The `fireworks-ai` SDK with an overridden base URL (it then calls `/v1/...`)."""

from __future__ import annotations

import fireworks

MODEL = "accounts/fireworks/models/fake-chatml"


def test_chat_completions_create(fw_client, server) -> None:
    response = fw_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, top_k=10,
        logprobs=True, top_logprobs=2, perf_metrics_in_response=True, return_token_ids=True,
    )  # fmt: skip
    assert response.choices[0].message.content and response.usage.completion_tokens == 6
    assert len(response.choices[0].logprobs.content) == 6 and response.perf_metrics["prompt-tokens"] > 0
    assert response.prompt_token_ids == list(server.engine.submitted[0].prompt_token_ids)
    assert server.engine.submitted[0].sampling.top_k == 10


def test_chat_completions_stream(fw_client, server) -> None:
    stream = fw_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == server.engine.reply
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices[0].finish_reason == "stop"


def test_completions_create(fw_client, server) -> None:
    response = fw_client.completions.create(
        model=MODEL, prompt="Tell me", max_tokens=0, echo=True, logprobs=1, raw_output=True
    )
    choice = response.choices[0]
    assert choice.text == "Tell me" and choice.logprobs.token_logprobs[0] is None
    assert choice.raw_output.completion_token_ids == server.engine.tokenizer.encode("Tell me")


def test_unknown_model_error_type(fw_client) -> None:
    try:
        fw_client.completions.create(model="missing", prompt="x")
    except fireworks.NotFoundError as exc:
        assert exc.status_code == 404
    else:
        raise AssertionError("expected a 404")
