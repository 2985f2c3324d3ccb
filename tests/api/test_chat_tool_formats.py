"""Tool-call formats other than the default through the real server and the `openai` SDK: Mistral
recognised from its chat template, Llama 3 JSON named by the catalog, and the catalog setting
itself on its way to the model's `ModelInfo`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from firebox.catalog import parse_catalog
from firebox.config import EngineOptions
from firebox.engine.describe import model_info
from firebox.loader.tokenizer import Tokenizer
from tests.fakes import CHATML_SPECIAL, CHATML_TEMPLATE, build_backend

MODEL = "accounts/fireworks/models/fake-chatml"
ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
# ChatML, plus the line of Mistral's template that writes past calls
MISTRAL_MARKED = CHATML_TEMPLATE + '{% if false %}{{- "[TOOL_CALLS] [" }}{% endif %}'


@pytest.fixture
def tools_server(server, monkeypatch):
    monkeypatch.setattr(server.engine, "max_model_len", 4096)
    return server


def _calls(choice) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or ()]


def test_a_mistral_template_gets_mistral_calls(client, tools_server, monkeypatch) -> None:
    monkeypatch.setattr(tools_server.engine, "tokenizer", Tokenizer(build_backend(), CHATML_SPECIAL, MISTRAL_MARKED))
    tools_server.engine.reply = 'Checking. [TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]'
    choice = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER]).choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Checking. ")
    assert _calls(choice) == [("get_weather", {"city": "Paris"})]
    spec = tools_server.engine.submitted[0].structured_output
    assert '"[TOOL_CALLS]"' in spec.source and tools_server.engine.submitted[0].sampling.skip_special_tokens


def test_the_catalog_names_llama3_json(client, tools_server, monkeypatch) -> None:
    monkeypatch.setattr(tools_server.engine, "tool_call_format", "llama3_json")
    tools_server.engine.reply = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], stream=True)
    chunks = [choice for chunk in stream for choice in chunk.choices]
    assert "".join(c.delta.content or "" for c in chunks) == ""  # the call's JSON is never content
    (call,) = [call for c in chunks for call in c.delta.tool_calls or ()]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert chunks[-1].finish_reason == "tool_calls"
    spec = tools_server.engine.submitted[0].structured_output
    assert spec.source.startswith("start: TEXT | calls") and '"parameters"' in spec.source


def test_a_catalog_entry_sets_the_format_of_its_model() -> None:
    catalog = parse_catalog({"models": [{"id": "m", "tool_call_format": "mistral"}]})
    config = catalog.models[0].engine_config(EngineOptions())
    source = SimpleNamespace(
        arch=SimpleNamespace(architecture="X", vocab_size=10), max_model_len=64, eos_token_ids=(1,), generation_defaults={}
    )
    assert model_info(config, source).tool_call_format == "mistral"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model 'm': unknown tool call format 'hermes2'"):
        parse_catalog({"models": [{"id": "m", "tool_call_format": "hermes2"}]})
