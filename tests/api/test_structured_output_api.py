"""How `response_format` and the Responses API's `text.format` reach the engine: the spec each
request carries, and the request shapes that are refused before the engine sees them."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from firebox.engine.types import GrammarSyntax

MODEL = "accounts/fireworks/models/fake-chatml"
ASK = [{"role": "user", "content": "Hello"}]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "pet": {"type": "object", "properties": {"kind": {"type": "string"}}}}}
PERSON_CLOSED = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "pet": {"type": "object", "properties": {"kind": {"type": "string"}}, "additionalProperties": False},
    },
    "additionalProperties": False,
}


def _spec(server):
    [request] = server.engine.submitted
    return request.structured_output


@pytest.mark.parametrize("schema", [PERSON, json.dumps(PERSON)])
def test_json_schema_objects_are_closed_and_a_string_schema_is_accepted(client, server, schema) -> None:
    client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    )
    spec = _spec(server)
    assert spec.syntax is GrammarSyntax.JSON_SCHEMA and json.loads(spec.source) == PERSON_CLOSED


def test_an_explicit_additional_properties_is_kept(client, server) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}}
    client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    )
    assert json.loads(_spec(server).source) == schema


def test_json_object_means_any_object_or_the_schema_beside_it(client, server) -> None:
    client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"})
    assert json.loads(_spec(server).source) == {"type": "object"}
    server.engine.reset()
    client.chat.completions.create(
        model=MODEL, messages=ASK, extra_body={"response_format": {"type": "json_object", "schema": PERSON}}
    )
    assert json.loads(_spec(server).source) == PERSON_CLOSED


def test_grammar_mode_and_text(client, server) -> None:
    client.chat.completions.create(
        model=MODEL, messages=ASK, extra_body={"response_format": {"type": "grammar", "grammar": 'root ::= "a"'}}
    )
    assert _spec(server).syntax is GrammarSyntax.GBNF and _spec(server).source == 'root ::= "a"'
    server.engine.reset()
    client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "text"})
    assert _spec(server) is None


def test_every_choice_of_n_carries_the_spec(client, server) -> None:
    client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"}, n=3)
    specs = {request.structured_output for request in server.engine.submitted}
    assert len(server.engine.submitted) == 3 and len(specs) == 1 and None not in specs


def test_completions_take_response_format(client, server) -> None:
    client.completions.create(model=MODEL, prompt="Hi", extra_body={"response_format": {"type": "json_object"}})
    assert _spec(server).syntax is GrammarSyntax.JSON_SCHEMA


def test_responses_text_format_json_schema(client, server) -> None:
    class Pet(BaseModel):
        name: str

    server.engine.reply = '{"name": "Rex"}'
    response = client.responses.parse(model=MODEL, input="Hi", text_format=Pet)
    assert response.output_parsed == Pet(name="Rex")
    assert json.loads(_spec(server).source)["required"] == ["name"]
    assert response.text.format.type == "json_schema" and response.text.format.name == "Pet"


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_schema"}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": "{oops"}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": "[1]"}}, "response_format.json_schema.schema"),
        ({"type": "grammar", "grammar": "  "}, "response_format.grammar"),
        ({"type": "text", "grammar": 'root ::= "a"'}, "response_format.grammar"),
        ({"type": "json_object", "grammar": 'root ::= "a"'}, "response_format.grammar"),
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "colour": 1}}, "response_format.json_schema.colour"),
    ],
)
def test_malformed_response_formats_are_a_400_naming_the_field(client, server, response_format, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body={"response_format": response_format})
    assert caught.value.body["param"] == param
    assert not server.engine.submitted
