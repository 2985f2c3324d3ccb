"""Automatic prefix caching through the real server: a shared system prompt is served from the
cache (and reported as cached_tokens) without changing the greedy output, and n > 1 siblings
share their prompt blocks."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.helpers import MODEL

pytestmark = pytest.mark.slow

BLOCK_SIZE = 16  # the server's default --block-size


def system_prompt() -> str:
    """A long system prompt no other test has sent (so nothing of it is cached yet)."""
    return (
        f"You are assistant {uuid.uuid4().hex}. You answer briefly and precisely, you never invent facts, "
        "and when a question is ambiguous you say which reading you chose. You prefer plain words to jargon, "
        "short sentences to long ones, and lists only when the user asks for several items."
    )


def num_cacheable(token_ids: list[int], other: list[int] | None = None) -> int:
    """Tokens a prompt can take from the cache: whole blocks of the prefix it shares with `other`
    (itself by default), never its last token (whose logits must be computed)."""
    other = token_ids if other is None else other
    shared = next((i for i, (a, b) in enumerate(zip(token_ids, other)) if a != b), min(len(token_ids), len(other)))
    return min(shared, len(token_ids) - 1) // BLOCK_SIZE * BLOCK_SIZE


def chat(client, messages: list[dict], **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=16, temperature=0, **kwargs
    )


def cached_tokens(raw) -> int:
    cached = raw.parse().usage.prompt_tokens_details.cached_tokens
    assert int(raw.headers["fireworks-cached-prompt-tokens"]) == cached
    return cached


def test_a_shared_system_prompt_is_cached_without_changing_the_output(server, client) -> None:
    system = {"role": "system", "content": system_prompt()}
    colors = [system, {"role": "user", "content": "Name three colors."}]
    fruits = [system, {"role": "user", "content": "Name three fruits."}]
    colors_ids, fruits_ids = server.tokenize(messages=colors), server.tokenize(messages=fruits)
    assert num_cacheable(fruits_ids, colors_ids) >= 4 * BLOCK_SIZE

    isolated = chat(client, colors, extra_body={"prompt_cache_isolation_key": uuid.uuid4().hex})
    first, second = chat(client, colors), chat(client, colors)
    assert [cached_tokens(r) for r in (isolated, first, second)] == [0, 0, num_cacheable(colors_ids)]
    texts = {r.parse().choices[0].message.content for r in (isolated, first, second)}
    assert len(texts) == 1

    other = chat(client, fruits)
    uncached_other = chat(client, fruits, extra_body={"prompt_cache_isolation_key": uuid.uuid4().hex})
    assert cached_tokens(other) == num_cacheable(fruits_ids, colors_ids)
    assert cached_tokens(uncached_other) == 0
    assert other.parse().choices[0].message.content == uncached_other.parse().choices[0].message.content


def test_n_siblings_share_their_prompt_blocks(server, client) -> None:
    messages = [{"role": "system", "content": system_prompt()}, {"role": "user", "content": "Name a fruit."}]
    prompt_ids = server.tokenize(messages=messages)
    hits_before = server.metric("firebox:prefix_cache_hits_total")
    request = {"model": MODEL, "messages": messages, "max_tokens": 4, "n": 3, "seed": 3}
    first = client.chat.completions.create(**request)
    assert len(first.choices) == 3 and first.usage.prompt_tokens == len(prompt_ids)
    # One sibling computes the prompt, the other two read its blocks.
    assert server.metric("firebox:prefix_cache_hits_total") - hits_before == 2 * num_cacheable(prompt_ids)
    again = client.chat.completions.create(**request)
    assert again.usage.prompt_tokens_details.cached_tokens == num_cacheable(prompt_ids)
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]
