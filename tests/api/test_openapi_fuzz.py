"""A bounded fuzz run of the inference routes against the server's own OpenAPI document
(schemathesis, fixed seed): no request may get a server error, and a request the document allows
may be refused only with an error this file names and explains (below).

The server is the FakeEngine one of tests/conftest.py, over HTTP. Positive cases (bodies the
document allows) must be answered 2xx, or 401/404/413/429, or one of `SEMANTIC_REFUSALS`; negative
cases (bodies it does not allow) must only never get a 5xx.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.generation.modes import GenerationMode

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/tokenize"]
POSITIVE_CASES = 50  # per route: five routes, 250 requests the document allows
NEGATIVE_CASES = 16  # per route: 80 requests it does not allow
NOT_REFUSALS = {401, 404, 413, 429}  # credentials, names, size and load: not the body's shape

# Refusals of bodies the document allows, for reasons a JSON schema cannot state: each matches the
# error message the server gives, so any other refusal fails the test.
SEMANTIC_REFUSALS = [
    # Fields declared so that the SDKs' requests are not "unknown fields", whose neutral values
    # (null, [], false) pass and whose other values are a 400 naming the feature firebox lacks.
    r"is not supported by firebox",
    r"content part of type .* is not supported",  # only text parts; the type is an open string
    r"content blocks of type .* are not supported",
    r"input items of type .* are not supported",
    r"'(reasoning_effort|thinking)' is not supported by this model",  # the model's chat template decides
    # Depend on the model: its vocabulary, its context length, its chat template.
    r"prompt token ids must be below the vocabulary size",
    r"The prompt is too long",
    r"chat template error",
    r"the prompt is empty",
    # Rules across fields or across messages.
    r"stream_options is only allowed when stream is true",
    r"tool_choice needs tools",
    r"tool names must be unique",
    r"a tool message needs tool_call_id",
    r"matches no earlier assistant tool call",
    r"matches no tool_use block of an earlier assistant turn",
    r"the last message must be the user's",
    r"a \w+ block cannot appear in an? \w+ turn",
    r"give exactly one of 'prompt' and 'messages'",
    r"role must be one of",  # an item's role decides which other fields it may have
    r"unknown field .* in a message item",  # input items are a union told apart by type and role
    r"input must hold at least one item",
    # `tool_calls` of an assistant message is an open list of objects in the document (OpenAI's
    # and Fireworks' shapes differ); serving checks each call's id and function.
    r'a tool call needs "id" and "function"',
    # Values inside open strings and maps: stop strings must not be empty, logit_bias keys are
    # token ids, metadata and identifiers hold no NUL (the document states lengths, not these).
    r"stop strings must not be empty",
    r"logit_bias keys must be token ids",
    r"text must not contain NUL characters",
    r"at most 4 stop sequences",
    r'input_schema must be a JSON schema with "type": "object"',
]
_ALLOWED = re.compile("|".join(SEMANTIC_REFUSALS))


def _integers_spelled_as_integers(value: Any) -> Any:
    """JSON Schema (draft 6 on) reads `5.0` as the integer 5 and schemathesis sends it so; firebox,
    as OpenAI does, refuses a decimal where an integer is due (tests/api/test_request_limits.py).
    Integral floats are sent as integers; number fields take integers too. Integers are kept within
    int64, the widest bound the document states."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # The generator reads int64 bounds (the seed's) through floats: it can derive an integer
        # just past them (-9223372036854776000 for -2**63). Such a value is its slip, not a body
        # the document allows: brought back to the bound.
        return min(max(value, -(2**63)), 2**63 - 1)
    if isinstance(value, list):
        return [_integers_spelled_as_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: _integers_spelled_as_integers(item) for key, item in value.items()}
    return value


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:300]


@pytest.fixture(scope="module")
def operations(live_server) -> dict[str, Any]:
    document = httpx.get(f"{live_server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == "POST" and operation.path in ROUTES:
            found[operation.path] = operation
    assert sorted(found) == sorted(ROUTES)
    return found


def _fuzz(server, operation: Any, mode: GenerationMode, cases: int) -> list[str]:
    failures: list[str] = []

    @seed(19)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if isinstance(case.body, dict):
            case.body = _integers_spelled_as_integers(case.body)
            if mode is GenerationMode.POSITIVE:
                # a model the server does not serve is a 404; the document cannot list the models
                case.body["model"] = server.engine.name
        response = case.call(base_url=server.url, timeout=30)
        status = response.status_code
        refused = 400 <= status < 500 and status not in NOT_REFUSALS and not _ALLOWED.search(_message(response))
        if status >= 500 or (mode is GenerationMode.POSITIVE and refused):
            failures.append(f"{status} {_message(response)[:200]} <- {str(case.body)[:300]}")

    run()
    return failures


@pytest.mark.parametrize("route", ROUTES)
def test_valid_requests_are_served_and_none_is_a_server_error(server, operations, route: str) -> None:
    failures = _fuzz(server, operations[route], GenerationMode.POSITIVE, POSITIVE_CASES)
    failures += _fuzz(server, operations[route], GenerationMode.NEGATIVE, NEGATIVE_CASES)
    assert not failures, "\n".join(failures[:10])
