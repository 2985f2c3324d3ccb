"""Speculative decoding against plain decoding, on one machine, in one run:

    .venv/bin/python -m benchmarks.speculation_bench [--threads 2] [--model default] [--out FILE.json]

1. A code edit (a ~300-token source file, rename one identifier) with `prediction` = the original
   file, against the same request without it: one stream, temperature 0.
2. Summarise a document with `--speculative ngram` against a server without it: one stream.
3. 32 concurrent streams of short chats, n-gram on against off: total output tokens/s.
Each figure is decode speed from the stream (tokens after the first / time after the first) and
the whole request (tokens / wall time); every request carries a fresh cache salt so that the
prompt is computed the same way in both arms. Ratios are what to read: the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from firebox.config import DEFAULT_MODEL_NAME

REPO = Path(__file__).resolve().parents[1]
TRIALS = 2


def code_file() -> str:
    functions = []
    for name, op, doc in [
        ("add", "+", "Sum of two numbers."),
        ("subtract", "-", "Difference of two numbers."),
        ("multiply", "*", "Product of two numbers."),
        ("divide", "/", "Quotient of two numbers."),
        ("power", "**", "a raised to the power b."),
        ("modulo", "%", "Remainder of a divided by b."),
    ]:
        functions.append(f'def {name}(a, b):\n    """{doc}"""\n    result = a {op} b\n    return result\n')
    functions.append(
        "def apply(operation, values):\n    total = values[0]\n    for value in values[1:]:\n"
        "        total = operation(total, value)\n    return total\n"
    )
    return "\n\n".join(functions)


DOCUMENT = " ".join(
    [
        "The city library opened a new reading room on the second floor in March.",
        "The reading room has forty desks, twelve computers and a quiet corner for children.",
        "Opening hours are from nine in the morning to eight in the evening on weekdays.",
        "On Saturdays the reading room opens at ten and closes at four in the afternoon.",
        "Visitors need a library card, which is free for residents of the city.",
        "The library also lends laptops for two weeks to students who register online.",
        "A volunteer group offers reading help for adults every Tuesday evening.",
        "The renovation cost two million euros and was paid for by the city council.",
    ]
    * 2
)


@dataclass
class Measure:
    completion_tokens: int
    wall_s: float
    decode_s: float  # from the first content chunk to the last

    @property
    def decode_tps(self) -> float:
        return (self.completion_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


async def stream_chat(http: httpx.AsyncClient, messages: list[dict], max_tokens: int, **extra: Any) -> Measure:
    body = {
        "model": DEFAULT_MODEL_NAME, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
        "prompt_cache_isolation_key": uuid.uuid4().hex, **extra,
    }  # fmt: skip
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async with http.stream("POST", "/inference/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                now = time.perf_counter()
                first = first or now
                last = now
    return Measure(tokens, time.perf_counter() - started, (last or 0) - (first or 0))


@contextmanager
def server(port: int, threads: int, model: str, *extra: str):
    args = [str(Path(sys.executable).with_name("firebox")), "serve", "--port", str(port), "--num-threads", str(threads)]
    args += ["--model", model, "--max-num-seqs", "64", *extra]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def summary(measures: list[Measure]) -> dict[str, float]:
    return {
        "decode_tps": statistics.median(m.decode_tps for m in measures),
        "e2e_tps": statistics.median(m.completion_tokens / m.wall_s for m in measures),
        "completion_tokens": statistics.median(m.completion_tokens for m in measures),
    }


async def code_edit(url: str) -> dict[str, Any]:
    code = code_file()
    ask = [{"role": "user", "content": f"Rename the function multiply to times. Reply with the whole file only.\n\n{code}"}]
    plain, predicted = [], []
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for _ in range(TRIALS):  # interleaved, so drift hits both arms alike
            plain.append(await stream_chat(http, ask, 300))
            predicted.append(await stream_chat(http, ask, 300, prediction={"type": "content", "content": code}))
    return {"plain": summary(plain), "prediction": summary(predicted)}


async def summarise(url: str) -> dict[str, float]:
    ask = [{"role": "user", "content": f"Summarise this notice, quoting its key sentences:\n\n{DOCUMENT}"}]
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        return summary([await stream_chat(http, ask, 200) for _ in range(TRIALS)])


async def concurrent(url: str, num_streams: int = 32) -> dict[str, float]:
    prompts = [[{"role": "user", "content": f"Tell me fact number {i} about the sea."}] for i in range(num_streams)]
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)) as http:
        started = time.perf_counter()
        measures = await asyncio.gather(*(stream_chat(http, p, 64) for p in prompts))
        elapsed = time.perf_counter() - started
    return {"output_tps": sum(m.completion_tokens for m in measures) / elapsed}


def main(
    threads: Annotated[int, typer.Option(help="Engine threads.")] = 2,
    model: Annotated[str, typer.Option(help="Model source.")] = "default",
    port: Annotated[int, typer.Option(help="Server port.")] = 8471,
    out: Annotated[Path | None, typer.Option(help="Write the results here as JSON.")] = None,
) -> None:
    results: dict[str, Any] = {"threads": threads, "model": model, "cpu": _cpu(), "loadavg_before": os.getloadavg()}

    def record(name: str, value: Any) -> None:  # each phase as it ends: a long run still leaves figures
        results[name] = value
        print(name, json.dumps(value), flush=True)

    with server(port, threads, model) as url:
        record("code_edit", asyncio.run(code_edit(url)))
        record("summarise_off", asyncio.run(summarise(url)))
        record("concurrent_off", asyncio.run(concurrent(url)))
    with server(port, threads, model, "--speculative", "ngram") as url:
        record("summarise_ngram", asyncio.run(summarise(url)))
        record("concurrent_ngram", asyncio.run(concurrent(url)))
    results["loadavg_after"] = os.getloadavg()
    results["ratios"] = {
        "code_edit_prediction_decode": _ratio(results["code_edit"]["prediction"], results["code_edit"]["plain"], "decode_tps"),
        "code_edit_prediction_e2e": _ratio(results["code_edit"]["prediction"], results["code_edit"]["plain"], "e2e_tps"),
        "summarise_ngram_decode": _ratio(results["summarise_ngram"], results["summarise_off"], "decode_tps"),
        "summarise_ngram_e2e": _ratio(results["summarise_ngram"], results["summarise_off"], "e2e_tps"),
        "concurrent32_ngram": _ratio(results["concurrent_ngram"], results["concurrent_off"], "output_tps"),
    }
    text = json.dumps(results, indent=2, default=asdict)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _ratio(a: dict[str, float], b: dict[str, float], key: str) -> float:
    return round(a[key] / b[key], 3) if b[key] else 0.0


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(simd)})"


if __name__ == "__main__":
    typer.run(main)
