"""Speculative decoding against plain decoding, on one machine, in one run:

    .venv/bin/python -m benchmarks.speculation_bench [--threads 2] [--model default] [--rounds 6] [--out FILE.json]

1. A code edit (a ~300-token source file, rename one identifier) with `prediction` = the original
   file, against the same request without it: one stream, temperature 0.
2. Summarise a document with `--speculative ngram` against a server without it: one stream.
3. 32 concurrent streams of short chats, n-gram on against off: total output tokens/s, in
   `--rounds` pairs (the order alternating), each pair giving a ratio: one trial per arm could not
   resolve the 3 % this is judged by.
Both servers stay up for the whole run (an idle one takes no CPU) and the arms alternate, so that
drift in the machine's speed hits both alike. Each figure is decode speed from the stream (tokens
after the first / time after the first) and the whole request (tokens / wall time); every request
carries a fresh cache salt so that the prompt is computed the same way in both arms. Ratios are
what to read: the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def decode_tps(self) -> float:
        return (self.completion_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


async def stream_chat(
    http: httpx.AsyncClient, messages: list[dict], max_tokens: int, base_url: str = "", **extra: Any
) -> Measure:
    body = {
        "model": DEFAULT_MODEL_NAME, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True},
        "prompt_cache_isolation_key": uuid.uuid4().hex, **extra,
    }  # fmt: skip
    started = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    async with http.stream("POST", f"{base_url}/inference/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                now = time.perf_counter()
                first = first or now
                last = now
    details = usage.get("completion_tokens_details") or {}
    return Measure(
        usage.get("completion_tokens", 0), time.perf_counter() - started, (last or 0) - (first or 0),
        details.get("accepted_prediction_tokens") or 0, details.get("rejected_prediction_tokens") or 0,
    )  # fmt: skip


@contextmanager
def server(port: int, threads: int, model: str, *extra: str):
    args = [str(Path(sys.executable).with_name("firebox")), "serve", "--port", str(port), "--num-threads", str(threads)]
    data_dir = tempfile.TemporaryDirectory(prefix="firebox-bench-")  # one per server: two may run at once
    args += ["--model", model, "--max-num-seqs", "64", "--data-dir", data_dir.name, *extra]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`{' '.join(args)}` did not come up (exit code {proc.poll()})")
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
        data_dir.cleanup()


def summary(measures: list[Measure]) -> dict[str, float]:
    return {
        "decode_tps": statistics.median(m.decode_tps for m in measures),
        "e2e_tps": statistics.median(m.completion_tokens / m.wall_s for m in measures),
        "completion_tokens": statistics.median(m.completion_tokens for m in measures),
        "accepted_prediction_tokens": statistics.median(m.accepted_prediction_tokens for m in measures),
        "rejected_prediction_tokens": statistics.median(m.rejected_prediction_tokens for m in measures),
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


async def summarise(plain_url: str, ngram_url: str) -> dict[str, dict[str, float]]:
    ask = [{"role": "user", "content": f"Summarise this notice, quoting its key sentences:\n\n{DOCUMENT}"}]
    measures: dict[str, list[Measure]] = {"off": [], "ngram": []}
    async with httpx.AsyncClient(timeout=600) as http:
        for _ in range(TRIALS):  # interleaved
            for arm, url in (("off", plain_url), ("ngram", ngram_url)):
                measures[arm].append(await stream_chat(http, ask, 200, base_url=url))
    return {arm: summary(m) for arm, m in measures.items()}


async def concurrent_tps(http: httpx.AsyncClient, url: str, num_streams: int) -> float:
    prompts = [[{"role": "user", "content": f"Tell me fact number {i} about the sea."}] for i in range(num_streams)]
    started = time.perf_counter()
    measures = await asyncio.gather(*(stream_chat(http, p, 64, base_url=url) for p in prompts))
    return sum(m.completion_tokens for m in measures) / (time.perf_counter() - started)


async def concurrent(plain_url: str, ngram_url: str, rounds: int, num_streams: int = 32) -> dict[str, Any]:
    """`rounds` pairs of runs, n-gram on against off, the order alternating from pair to pair."""
    pairs = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=2 * num_streams)) as http:
        await concurrent_tps(http, plain_url, num_streams)  # warm-up of both
        await concurrent_tps(http, ngram_url, num_streams)
        for i in range(rounds):
            order = (("off", plain_url), ("ngram", ngram_url))
            tps = {arm: await concurrent_tps(http, url, num_streams) for arm, url in (order if i % 2 == 0 else order[::-1])}
            pairs.append(tps)
    ratios = [p["ngram"] / p["off"] for p in pairs]
    return {
        "pairs": pairs, "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3),
        "off_median_tps": statistics.median(p["off"] for p in pairs),
        "ngram_median_tps": statistics.median(p["ngram"] for p in pairs),
    }  # fmt: skip


def main(
    threads: Annotated[int, typer.Option(help="Engine threads.")] = 2,
    model: Annotated[str, typer.Option(help="Model source.")] = "default",
    port: Annotated[int, typer.Option(help="The plain server's port; the n-gram one takes the next.")] = 8471,
    out: Annotated[Path | None, typer.Option(help="Write the results here as JSON.")] = None,
    rounds: Annotated[int, typer.Option(help="Pairs of 32-stream runs, n-gram on against off.")] = 6,
) -> None:
    results: dict[str, Any] = {"threads": threads, "model": model, "cpu": _cpu(), "loadavg_before": os.getloadavg()}

    def record(name: str, value: Any) -> None:  # each phase as it ends: a long run still leaves figures
        results[name] = value
        print(name, json.dumps(value), flush=True)

    with server(port, threads, model) as plain_url, server(port + 1, threads, model, "--speculative", "ngram") as ngram_url:
        record("code_edit", asyncio.run(code_edit(plain_url)))
        record("summarise", asyncio.run(summarise(plain_url, ngram_url)))
        record("concurrent", asyncio.run(concurrent(plain_url, ngram_url, rounds)))
    results["loadavg_after"] = os.getloadavg()
    code_edit_arms, summarise_arms = results["code_edit"], results["summarise"]
    results["ratios"] = {
        "code_edit_prediction_decode": _ratio(code_edit_arms["prediction"], code_edit_arms["plain"], "decode_tps"),
        "code_edit_prediction_e2e": _ratio(code_edit_arms["prediction"], code_edit_arms["plain"], "e2e_tps"),
        "summarise_ngram_decode": _ratio(summarise_arms["ngram"], summarise_arms["off"], "decode_tps"),
        "summarise_ngram_e2e": _ratio(summarise_arms["ngram"], summarise_arms["off"], "e2e_tps"),
        "concurrent32_ngram_median": results["concurrent"]["median_ratio"],
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
