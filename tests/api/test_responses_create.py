"""`client.responses.create` against the FakeEngine: input forms, instructions, limits, sampling,
usage in both namings, logprobs, and the 400s for what firebox does not implement."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"


def _prompt(server, index: int = -1) -> str:
    return server.engine.tokenizer.decode(server.engine.submitted[index].prompt_token_ids, skip_special_tokens=False)


def _post(server, body: dict, path: str = "/v1/responses") -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        return http.post(path, json=body)


def test_string_input(client, server) -> None:
    response = client.responses.create(model=MODEL, input="Hello")
    assert re.fullmatch(r"resp_[0-9a-f]{32}", response.id) and response.object == "response"
    assert response.status == "completed" and response.output_text == server.engine.reply
    message = response.output[0]
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert re.fullmatch(r"msg_[0-9a-f]{32}", message.id)
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert _prompt(server).endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert response.store is True and response.tools == [] and response.tool_choice == "auto"
    assert response.truncation == "disabled" and response.incomplete_details is None and response.error is None


def test_usage_carries_both_namings_and_the_record_says_responses(client, server) -> None:
    raw = client.responses.with_raw_response.create(model=MODEL, input="Hello")
    usage = json.loads(raw.text)["usage"]
    num_prompt = len(server.engine.submitted[0].prompt_token_ids)
    num_output = len(server.engine.tokenizer.encode(server.engine.reply)) + 1  # and the EOS
    assert usage["input_tokens"] == usage["prompt_tokens"] == num_prompt
    assert usage["output_tokens"] == usage["completion_tokens"] == num_output
    assert usage["total_tokens"] == num_prompt + num_output
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    assert raw.headers["x-request-id"] and json.loads(raw.headers["fireworks-sampling-options"])["temperature"] == 1.0
    (record,) = server.records
    assert record.endpoint == "responses" and record.completion_tokens == num_output and record.status_code == 200


def test_item_list_and_instructions_become_the_chat_prompt(client, server) -> None:
    items = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "What's the capital of France?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And its population?"}]},
    ]
    response = client.responses.create(model=MODEL, input=items, instructions="You are a geographer.")
    assert response.instructions == "You are a geographer."
    assert _prompt(server) == (
        "<|im_start|>system\nYou are a geographer.<|im_end|>\n<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat's the capital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd its population?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_max_output_tokens_makes_the_response_incomplete(client, server) -> None:
    response = client.responses.create(model=MODEL, input="Hello", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.usage.output_tokens == 3
    assert response.max_output_tokens == 3 and server.engine.submitted[0].sampling.max_tokens == 3


def test_sampling_parameters_reach_the_engine(client, server) -> None:
    extensions = {
        "top_k": 20,
        "min_p": 0.1,
        "typical_p": 0.9,
        "repetition_penalty": 1.2,
        "frequency_penalty": 0.3,
        "presence_penalty": -0.2,
        "seed": 3,
        "logit_bias": {"7": -100},
        "stop": ["zzz"],
        "ignore_eos": True,
    }
    response = client.responses.create(
        model=MODEL, input="Hello", temperature=0.5, top_p=0.8, max_output_tokens=9, extra_body=extensions
    )  # fmt: skip
    sampling = server.engine.submitted[0].sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p, sampling.typical_p) == (
        0.5, 0.8, 20, 0.1, 0.9,
    )  # fmt: skip
    assert (sampling.repetition_penalty, sampling.frequency_penalty, sampling.presence_penalty) == (1.2, 0.3, -0.2)
    assert sampling.seed == 3 and sampling.logit_bias == ((7, -100.0),) and sampling.stop == ("zzz",)
    assert sampling.ignore_eos and sampling.max_tokens == 9
    assert (response.temperature, response.top_p) == (0.5, 0.8)


def test_model_defaults_are_echoed_as_used(client, server) -> None:
    server.engine.generation_defaults = {"temperature": 0.6, "top_p": 0.95}
    response = client.responses.create(model=MODEL, input="Hello")
    assert (response.temperature, response.top_p) == (0.6, 0.95)
    assert server.engine.submitted[0].sampling.temperature == 0.6


def test_echoed_settings(client) -> None:
    response = client.responses.create(
        model=MODEL, input="Hello", metadata={"team": "search"}, user="u-1", parallel_tool_calls=False,
        tool_choice="none", tools=[], text={"format": {"type": "text"}}, truncation="auto", service_tier="priority",
        include=["reasoning.encrypted_content"], reasoning={"effort": None}, safety_identifier="s-1",
    )  # fmt: skip
    assert response.metadata == {"team": "search"} and response.user == "u-1" and response.safety_identifier == "s-1"
    assert response.parallel_tool_calls is False and response.tool_choice == "none" and response.truncation == "auto"
    assert response.text.format.type == "text" and response.service_tier == "priority"


def test_logprobs_when_included(client, server) -> None:
    response = client.responses.create(
        model=MODEL, input="Hello", max_output_tokens=4, include=["message.output_text.logprobs"], top_logprobs=2
    )
    logprobs = response.output[0].content[0].logprobs
    expected = server.engine.reply_ids(server.engine.submitted[0])[:4]
    tokenizer = server.engine.tokenizer
    assert [lp.token for lp in logprobs] == [tokenizer.token_text(t) for t in expected]
    assert all(len(lp.top_logprobs) == 2 and lp.bytes for lp in logprobs)
    assert client.responses.create(model=MODEL, input="Hi").output[0].content[0].logprobs == []


def test_perf_metrics_on_request(client) -> None:
    raw = client.responses.with_raw_response.create(model=MODEL, input="Hello")
    assert "perf_metrics" not in json.loads(raw.text) and raw.headers["fireworks-prompt-tokens"]
    response = client.responses.create(model=MODEL, input="Hello", extra_body={"perf_metrics_in_response": True})
    metrics = response.model_dump()["perf_metrics"]
    assert metrics["prompt-tokens"] == response.usage.input_tokens and "server-processing-time" in metrics


def test_truncation_disabled_refuses_and_auto_drops_the_oldest_items(client, server) -> None:
    items = [{"role": "user", "content": f"Tell me a story number {i} about a quick brown fox."} for i in range(30)]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input=items)
    assert info.value.body["param"] == "input" and 'truncation="auto"' in info.value.body["message"]
    assert server.engine.submitted == []
    response = client.responses.create(model=MODEL, input=items, truncation="auto", instructions="Be brief.")
    prompt = _prompt(server)
    assert response.status in ("completed", "incomplete")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "number 29 " in prompt
    assert "number 0 " not in prompt and len(server.engine.submitted[0].prompt_token_ids) < 256


def test_store_false_is_not_kept(client) -> None:
    response = client.responses.create(model=MODEL, input="Hello", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Again", previous_response_id=response.id)
    assert info.value.body["param"] == "previous_response_id"
    assert info.value.body["code"] == "previous_response_not_found"


def test_previous_response_id_continues_without_the_old_instructions(client, server) -> None:
    first = client.responses.create(model=MODEL, input="Remember the word teapot.", instructions="Be a parrot.")
    client.responses.create(model=MODEL, input="Which word?", previous_response_id=first.id)
    prompt = _prompt(server)
    assert "Remember the word teapot." in prompt and server.engine.reply in prompt
    assert "Be a parrot." not in prompt and prompt.endswith("user\nWhich word?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "web_search"}]),
        ("tool_choice", "required"),  # with no tools
        ("reasoning", {"effort": "low", "summary": "auto"}),
        ("background", True),
        ("conversation", "conv_123"),
        ("prompt", {"id": "pmpt_1"}),
        ("text", {"format": {"type": "xml"}}),
        ("prompt_cache_retention", "24h"),
        ("stream_options", {"include_obfuscation": True}),
        ("context_management", [{"type": "compaction"}]),
        ("moderation", {"model": "omni"}),
        ("truncation", "sometimes"),
        ("metadata", {f"k{i}": "v" for i in range(17)}),
        ("max_tokens", 5),
        ("n", 2),
        ("top_k", -2),
        ("temperature", 3),
        ("stop", [""]),
        ("logit_bias", {"a": 1}),
        ("include", ["everything"]),
        ("input", []),
    ],
)
def test_unsupported_fields_are_a_400_naming_them(server, field: str, value: object) -> None:
    response = _post(server, {"model": MODEL, "input": "Hello", field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert re.split(r"[.[]", error["param"])[0] == field and error["type"] == "invalid_request_error"
    assert server.engine.submitted == []


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call_output", "call_id": "c1", "output": "42"}, "input[0].call_id"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}, "input[0].content[0]"),
        ({"role": "critic", "content": "Hi"}, "input[0].role"),
        ({"role": "user", "content": "Hi", "name": "bob"}, "input[0].name"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
    ],
)
def test_unsupported_input_items_are_a_400_naming_where(server, item: dict, param: str) -> None:
    response = _post(server, {"model": MODEL, "input": [item]})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_served_under_both_prefixes(server) -> None:
    for path in ("/v1/responses", "/inference/v1/responses"):
        assert _post(server, {"model": MODEL, "input": "Hi"}, path).json()["status"] == "completed"
