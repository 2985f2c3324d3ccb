"""`response_format` -> the engine's `StructuredOutputSpec` (what constrained decoding enforces).

Only the request's shape is checked here (which fields go with which type, a schema that parses);
whether a schema or grammar can be enforced is the engine's grammar compiler's call, off the event
loop, and its refusal comes back as a 400 before the first token (`serving/run.py`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from firebox.engine.types import COMPACT_JSON_OPTIONS, GrammarSyntax, StructuredOutputSpec
from firebox.protocol.params import JsonSchemaDocument, ResponseFormat
from firebox.serving.errors import InvalidRequestError

PARAM = "response_format"
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}

# Keywords whose value is a schema, a list of schemas, or a map of name -> schema.
_SUBSCHEMA = ("items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames")
_SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def structured_output_spec(fmt: ResponseFormat | None) -> StructuredOutputSpec | None:
    """The spec of a response format; None for free text."""
    if fmt is None or fmt.type == "text":
        _check_no_extras(fmt, allowed=())
        return None
    if fmt.type == "grammar":
        _check_no_extras(fmt, allowed=("grammar",))
        if not fmt.grammar or not fmt.grammar.strip():
            raise InvalidRequestError('response_format type "grammar" needs a "grammar"', param=f"{PARAM}.grammar")
        return StructuredOutputSpec(GrammarSyntax.GBNF, fmt.grammar)
    if fmt.type == "json_object":
        _check_no_extras(fmt, allowed=("schema_",))
        schema = ANY_JSON_OBJECT if fmt.schema_ is None else _parse_schema(fmt.schema_, f"{PARAM}.schema")
        return json_schema_spec(schema)
    _check_no_extras(fmt, allowed=("json_schema", "schema_"))
    document = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    if document is None:  # Fireworks also takes the schema beside the type
        document = fmt.schema_
    if document is None:
        raise InvalidRequestError(
            'response_format type "json_schema" needs "json_schema": {"name": ..., "schema": {...}}',
            param=f"{PARAM}.json_schema.schema",
        )
    return json_schema_spec(_parse_schema(document, f"{PARAM}.json_schema.schema"))


def json_schema_spec(schema: dict[str, Any]) -> StructuredOutputSpec:
    """A schema's spec, objects closed as Fireworks closes them; canonical text, so that the same
    schema sent twice hits the engine's grammar cache."""
    return StructuredOutputSpec(GrammarSyntax.JSON_SCHEMA, json.dumps(close_objects(schema), sort_keys=True))


def json_lark(schema: dict[str, Any]) -> str:
    """A JSON schema embedded in Lark, written compactly as the rest of firebox's JSON."""
    return "%json " + json.dumps({**schema, "x-guidance": COMPACT_JSON_OPTIONS})


def after_thinking(spec: StructuredOutputSpec, opened: bool, open_tag: str, close_tag: str) -> StructuredOutputSpec:
    """`spec` on the answer only, after free thinking: `open_tag` (unless the prompt `opened` it), any
    text through the first `close_tag` (one lazy lexeme), blank space, then the answer. The rules
    have prefixed names: a user's grammar may well have an `answer`."""
    thinking = "fb_thinking FB_BLANK" if opened else f"({json.dumps(open_tag)} fb_thinking FB_BLANK)?"
    return StructuredOutputSpec(
        GrammarSyntax.LARK,
        "%llguidance {}\n"
        f"start: {thinking} fb_answer\n"
        f"fb_thinking[lazy]: /(.|\\n)*{_lark_regex(close_tag)}/\n"
        "FB_BLANK: /\\s*/\n" + _answer(spec),
    )


def _answer(spec: StructuredOutputSpec) -> str:
    """Lark rules whose `fb_answer` is `spec`."""
    match spec.syntax:
        case GrammarSyntax.JSON_SCHEMA:
            return f"fb_answer: {json_lark(json.loads(spec.source))}\n"
        case GrammarSyntax.REGEX:
            return f"fb_answer: /{_slashes_escaped(spec.source)}/\n"
        case GrammarSyntax.GBNF:
            from llguidance.gbnf_to_lark import any_to_lark  # here only: serving needs llguidance nowhere else

            return _answer(StructuredOutputSpec(GrammarSyntax.LARK, any_to_lark(spec.source)))
    lines = [line for line in spec.source.splitlines() if line.strip() != "%llguidance {}"]
    return re.sub(r"^start(\s*):", r"fb_answer\1:", "\n".join(lines), flags=re.M) + "\n"


def _lark_regex(text: str) -> str:
    return _slashes_escaped(re.escape(text))


def _slashes_escaped(regex: str) -> str:
    return regex.replace("/", "\\/")


def close_objects(schema: Any) -> Any:
    """A copy in which every object schema with `properties` and no `additionalProperties`
    allows no other property (Fireworks' and OpenAI's strict reading): a model left free to add
    keys adds them, and the caller's parser then gets fields it never asked for."""
    if isinstance(schema, list):
        return [close_objects(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    for key in _SUBSCHEMA:
        if isinstance(closed.get(key), dict | list):
            closed[key] = close_objects(closed[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(closed.get(key), list):
            closed[key] = [close_objects(item) for item in closed[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(closed.get(key), dict):
            closed[key] = {name: close_objects(sub) for name, sub in closed[key].items()}
    if isinstance(closed.get("additionalProperties"), dict):
        closed["additionalProperties"] = close_objects(closed["additionalProperties"])
    elif "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _parse_schema(document: JsonSchemaDocument, param: str) -> dict[str, Any]:
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"the schema is not valid JSON: {exc}", param=param) from exc
    if not isinstance(document, dict):
        raise InvalidRequestError("the schema must be a JSON object", param=param)
    return document


def _check_no_extras(fmt: ResponseFormat | None, allowed: tuple[str, ...]) -> None:
    if fmt is None:
        return
    for name in ("json_schema", "schema_", "grammar"):
        if name not in allowed and getattr(fmt, name) is not None:
            field = name.rstrip("_")
            raise InvalidRequestError(
                f'"{field}" does not go with response_format type "{fmt.type}"', param=f"{PARAM}.{field}"
            )
