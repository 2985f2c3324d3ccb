"""What a benchmark sends, and when: synthetic or file prompts, and Poisson arrival offsets.

Synthetic prompts are words drawn with a seed from a fixed list of common English words, each
of which is one token (with its leading space) in GPT-2-style BPE vocabularies such as
SmolLM2's, so `input_len` words make a prompt of about `input_len` tokens. Every request gets
its own draw: no two prompts share a prefix worth caching, on any server.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air teacher force "
    "education river garden light music table paper voice color window stone bird tree road field market "
    "plan open small large green blue red bright quiet early late happy simple strong clear short long warm "
    "cold new old good great little high low young important public sure free real best only full able "
    "close common hard easy fast slow north south east west ocean mountain island forest valley summer "
    "winter spring autumn letter picture season animal horse apple bread coffee doctor engine glass model"
).split()


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request of a workload: a prompt (completions, or one user message for chat) or a
    whole chat conversation, and the number of tokens to generate."""

    prompt: str
    max_tokens: int
    messages: tuple[dict[str, Any], ...] | None = None  # from a prompt file; chat endpoint only


def synthetic_requests(num_requests: int, input_len: int, output_len: int, seed: int) -> list[BenchRequest]:
    """`num_requests` prompts of `input_len` words each, reproducible from `seed`."""
    if input_len < 1 or output_len < 1:
        raise ValueError(f"input_len and output_len must be >= 1, got {input_len} and {output_len}")
    rng = random.Random(seed)
    return [
        BenchRequest(" ".join(rng.choices(WORDS, k=input_len)), output_len) for _ in range(num_requests)
    ]


def file_requests(path: Path, num_requests: int, output_len: int) -> list[BenchRequest]:
    """Requests from a prompt file, cycled to `num_requests`.

    A `.jsonl` file holds one object a line: `{"prompt": str}` or `{"messages": [...]}`, with an
    optional `max_tokens`; any other file holds one prompt a (non-empty) line."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"no prompts in {path}")
    if path.suffix == ".jsonl":
        pool = [_jsonl_request(json.loads(line), output_len, path) for line in lines]
    else:
        pool = [BenchRequest(line, output_len) for line in lines]
    return [pool[i % len(pool)] for i in range(num_requests)]


def _jsonl_request(row: Any, output_len: int, path: Path) -> BenchRequest:
    if isinstance(row, str):
        return BenchRequest(row, output_len)
    if not isinstance(row, dict) or not ("prompt" in row or "messages" in row):
        raise ValueError(f"{path}: each line needs a 'prompt' or 'messages' field, got {row!r:.80}")
    max_tokens = int(row.get("max_tokens", output_len))
    if "messages" in row:
        return BenchRequest("", max_tokens, tuple(row["messages"]))
    return BenchRequest(str(row["prompt"]), max_tokens)


def arrival_offsets(num_requests: int, request_rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each request is sent: all at 0 for an infinite rate,
    else a Poisson process (exponential gaps with mean 1 / rate)."""
    if request_rate <= 0:
        raise ValueError(f"request_rate must be > 0, got {request_rate}")
    if math.isinf(request_rate):
        return [0.0] * num_requests
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(num_requests):
        offsets.append(now)
        now += rng.expovariate(request_rate)
    return offsets
