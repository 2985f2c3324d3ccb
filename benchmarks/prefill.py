"""Prefill speed of one server: long prompts sent one at a time with `max_tokens: 1` and no prompt
cache, timed to the answer; prompt tokens/s is the prompt's tokens over that time.

Every prompt is its own draw of words (`firebox bench serve`'s synthetic prompts, one token a word
in SmolLM2's vocabulary), so no two share a prefix. On top of that each server is told not to
cache: llama-server with `cache_prompt: false`, firebox with a fresh `prompt_cache_isolation_key`
(its prefix-cache salt) per request. A response that reports cached prompt tokens anyway is an
error, not a figure.
"""

from __future__ import annotations

import resource
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from firebox.bench.workload import synthetic_requests

SERVERS = ("firebox", "llamacpp")


@dataclass(frozen=True, slots=True)
class PrefillSample:
    """One timed request."""

    prompt_tokens: int  # as the server counted them
    cached_tokens: int  # prompt tokens the server did not compute (must be 0)
    seconds: float  # request sent -> whole answer received

    @property
    def tokens_per_s(self) -> float:
        return self.prompt_tokens / self.seconds


def no_cache_fields(server: str) -> dict[str, Any]:
    """The request fields that keep `server` from reusing an earlier prompt's KV cache."""
    if server == "llamacpp":
        return {"cache_prompt": False}
    if server == "firebox":
        return {"prompt_cache_isolation_key": f"prefill-{uuid.uuid4().hex}"}
    raise ValueError(f"server must be one of {SERVERS}, got {server!r}")


def cached_tokens(body: dict[str, Any]) -> int:
    """Cached prompt tokens of a completion: the OpenAI usage field where the server fills it,
    else what llama-server's `timings` imply (prompt tokens it did not evaluate)."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    timings = body.get("timings") or {}
    if "prompt_n" in timings:
        return int(usage["prompt_tokens"]) - int(timings["prompt_n"])
    return 0


def send_prefill(client: httpx.Client, body: dict[str, Any]) -> PrefillSample:
    started = time.perf_counter()
    response = client.post("/v1/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    answer = response.json()
    return PrefillSample(int(answer["usage"]["prompt_tokens"]), cached_tokens(answer), seconds)


def measure_prefill(
    client: httpx.Client, model: str, server: str, prompt_len: int, num_requests: int, warmup: int, seed: int
) -> list[PrefillSample]:
    """`warmup` unmeasured requests, then `num_requests` timed ones, each a fresh prompt of
    `prompt_len` words, through `client` (its base URL the server's); RuntimeError where a server
    reports cached prompt tokens."""
    prompts = [r.prompt for r in synthetic_requests(warmup + num_requests, prompt_len, 1, seed)]
    samples = []
    for prompt in prompts:
        body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, **no_cache_fields(server)}
        sample = send_prefill(client, body)
        if sample.cached_tokens:
            raise RuntimeError(f"{server} reused {sample.cached_tokens} cached prompt tokens: not a prefill")
        samples.append(sample)
    return samples[warmup:]


def prefill_document(server: str, prompt_len: int, samples: list[PrefillSample]) -> dict[str, Any]:
    """The results file: medians, every sample, and this client's CPU seconds (for `cpu-share`)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "server": server,
        "prompt_len": prompt_len,
        "prompt_tokens": statistics.median(s.prompt_tokens for s in samples),
        "prefill_tokens_per_s": statistics.median(s.tokens_per_s for s in samples),
        "seconds_p50": statistics.median(s.seconds for s in samples),
        "samples": [{"prompt_tokens": s.prompt_tokens, "seconds": s.seconds} for s in samples],
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }
