"""Bounds on request fields that nothing else bounds (besides the body-size limit): list lengths,
string lengths and integer ranges, as annotated types the request models share.

Each bound is a constant here, so that the OpenAPI document states it (`maxItems`, `maxLength`,
`maximum`) and the error names it. Strict types refuse what a lax parser would coerce: `"yes"`
is no boolean and `"5"` no number, as OpenAI answers them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt

from firebox.protocol.common import reject_unpaired_surrogates

MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
MAX_MESSAGES = 10_000
MAX_PROMPTS = 256  # prompts of one completions request; each becomes n engine requests
MAX_PROMPT_TOKEN_IDS = 1 << 20
MAX_TOOLS = 128  # OpenAI's limit
MAX_METADATA_PAIRS = 16  # OpenAI's limits on `metadata`
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_IDENTIFIER_CHARS = 256  # `user`, cache keys: stored with the usage records
MAX_LOGIT_BIAS = 300  # entries, as OpenAI bounds it
MAX_STOP_CHARS = 256  # matching costs about the square of a stop string's length per token


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    return value


def _metadata_within_limits(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(item) > MAX_METADATA_VALUE_CHARS:
            raise ValueError(
                f"metadata keys are at most {MAX_METADATA_KEY_CHARS} characters, values at most "
                f"{MAX_METADATA_VALUE_CHARS}"
            )
        _no_nul(key)
        _no_nul(item)
    return value


Flag = StrictBool
"""A boolean that only `true` / `false` spell."""

Count = Annotated[StrictInt, Field(ge=0, le=MAX_INT32)]
"""A token count or length: stored and summed, so it fits an int32 column."""

PositiveCount = Annotated[StrictInt, Field(ge=1, le=MAX_INT32)]
Seed = Annotated[StrictInt, Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]
TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_INT32)]

# a bounded string's length cannot be counted over half a UTF-16 pair: those are refused first
Unicode = BeforeValidator(reject_unpaired_surrogates)
Identifier = Annotated[str, Field(max_length=MAX_IDENTIFIER_CHARS), AfterValidator(_no_nul), Unicode]
"""`user` and cache keys: at most 256 characters and no NUL (they reach the usage database)."""

Metadata = Annotated[
    dict[str, str], Field(max_length=MAX_METADATA_PAIRS), AfterValidator(_metadata_within_limits), Unicode
]
"""OpenAI's bounds: 16 pairs, keys of 64 characters, values of 512."""
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS), Unicode]
