"""Structured output on the real default model, through the real server and the real clients:
every document the server returns must parse and validate, whatever the model would rather say."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.helpers import MODEL

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Describe a pet as JSON."}]

PET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "species": {"enum": ["cat", "dog", "parrot"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "owner": {"$ref": "#/$defs/person"},
        "toys": {
            "type": "array",
            "items": {"type": "object", "properties": {"toy": {"type": "string", "maxLength": 12}}, "required": ["toy"]},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["name", "species", "age", "owner", "toys"],
    "$defs": {"person": {"type": "object", "properties": {"first": {"type": "string", "maxLength": 12}}, "required": ["first"]}},
}

TREE_SCHEMA: dict[str, Any] = {  # recursive: a node's children are nodes
    "type": "object",
    "properties": {
        "label": {"enum": ["a", "b"]},
        "children": {"type": "array", "items": {"$ref": "#"}, "maxItems": 1},
    },
    "required": ["label", "children"],
}


class Pet(BaseModel):
    name: str
    species: Literal["cat", "dog", "parrot"]
    age: int


def _json_schema(schema: dict[str, Any], name: str = "pet") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """What the server enforces: objects with properties admit no other keys (as Fireworks)."""
    from firebox.serving.structured_output import close_objects

    return close_objects(schema)


@pytest.mark.parametrize(
    ("prompt", "seed"),
    [("Give a short JSON object with a name and an age.", 1), ("Give a JSON object with a city and its country.", 2), ("Hello!", 3)],
)
def test_json_object_is_one_parseable_object(client, prompt: str, seed: int) -> None:
    messages = [{"role": "user", "content": prompt}]
    response = client.chat.completions.create(
        model=MODEL, messages=messages, response_format={"type": "json_object"}, max_tokens=300, seed=seed, temperature=0.3
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(json.loads(choice.message.content), dict)


def test_json_schema_with_nesting_arrays_enums_and_refs_validates(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=_json_schema(PET_SCHEMA), max_tokens=150, seed=7
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    document = json.loads(choice.message.content)
    jsonschema.validate(document, _closed(PET_SCHEMA))
    assert set(document) == set(PET_SCHEMA["properties"])  # closed: no key the schema does not name


def test_recursive_schema_given_as_a_json_string(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=_json_schema(json.dumps(TREE_SCHEMA)), max_tokens=100, seed=3
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), TREE_SCHEMA)


def test_parse_with_a_pydantic_model(client) -> None:
    completion = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Pet, max_tokens=80, seed=4)
    assert isinstance(completion.choices[0].message.parsed, Pet)


def test_responses_parse_with_a_pydantic_model(client) -> None:
    response = client.responses.parse(
        model=MODEL, input="Describe a pet.", text_format=Pet, max_output_tokens=150, temperature=0.3, extra_body={"seed": 4}
    )
    assert isinstance(response.output_parsed, Pet)
    assert response.text.format.type == "json_schema"


def test_responses_json_object(client) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Give a short JSON object with a name and an age.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=300,
        temperature=0.3,
        extra_body={"seed": 2},
    )
    assert response.status == "completed"
    assert isinstance(json.loads(response.output_text), dict)


def test_gbnf_grammar_gives_exactly_one_of_its_strings(client) -> None:
    for seed in range(3):
        response = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Is the sky green?"}],
            response_format={"type": "grammar", "grammar": 'root ::= "yes" | "no"'},
            seed=seed,
        )
        assert response.choices[0].message.content in ("yes", "no")
        assert response.choices[0].finish_reason == "stop"


def test_completions_take_response_format_too(client) -> None:
    schema = {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 2}
    response = client.completions.create(
        model=MODEL, prompt="Two colors:", max_tokens=30, extra_body={"response_format": _json_schema(schema)}
    )
    jsonschema.validate(json.loads(response.choices[0].text), schema)


def test_streamed_deltas_concatenate_to_valid_documents_for_each_of_n(client) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=_json_schema(PET_SCHEMA), max_tokens=150, n=3, seed=11, stream=True
    )
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1, 2]
    documents = [json.loads(text) for text in texts.values()]
    for document in documents:
        jsonschema.validate(document, _closed(PET_SCHEMA))
    assert len({json.dumps(d, sort_keys=True) for d in documents}) > 1  # seed + i: the choices differ


def test_seeded_constrained_request_repeats_exactly(client) -> None:
    kwargs = dict(model=MODEL, messages=ASK, response_format=_json_schema(PET_SCHEMA), max_tokens=150, seed=21)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_max_tokens_cuts_the_document_and_says_length(client) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=_json_schema(PET_SCHEMA), max_tokens=5
    )
    choice = response.choices[0]
    assert choice.finish_reason == "length" and response.usage.completion_tokens == 5
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)


def test_logprobs_are_of_the_sampled_tokens(client) -> None:
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is the sky green?"}],
        response_format={"type": "grammar", "grammar": 'root ::= "yes" | "no"'},
        logprobs=True,
        top_logprobs=2,
    )
    content = response.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == response.choices[0].message.content
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 2 for entry in content)


@pytest.mark.parametrize(
    ("response_format", "param", "words"),
    [
        (_json_schema({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}), "response_format", "not"),
        (_json_schema({"type": "strin"}), "response_format", "strin"),
        (_json_schema("{not json"), "response_format.json_schema.schema", "not valid JSON"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema", "schema"),
        ({"type": "grammar", "grammar": 'root ::= "yes" | ('}, "response_format", "gbnf"),
        ({"type": "grammar"}, "response_format.grammar", "grammar"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_schemas_and_grammars_are_a_400_naming_the_problem(
    client, response_format: dict[str, Any], param: str, words: str, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ASK, response_format=response_format, stream=stream, max_tokens=10
        )
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error


def test_fireworks_sdk(server) -> None:
    response = server.fireworks().chat.completions.create(
        model=MODEL, messages=ASK, response_format=_json_schema(PET_SCHEMA), max_tokens=150, seed=5
    )
    jsonschema.validate(json.loads(response.choices[0].message.content), _closed(PET_SCHEMA))


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_langchain_with_structured_output(server, method: str) -> None:
    from langchain_fireworks import ChatFireworks

    class Answer(BaseModel):
        name: str
        age: int

    llm = ChatFireworks(model=MODEL, base_url=f"{server.url}/inference", api_key="e2e", max_tokens=60, temperature=0)
    question = 'Reply with JSON like {"name": "Ann", "age": 30} for a person called Bob.'
    answer = llm.with_structured_output(Answer, method=method).invoke(question)
    assert isinstance(answer, Answer)
