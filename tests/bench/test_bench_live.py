"""`firebox bench serve` end to end: against the firebox app over a FakeEngine, and against a
tiny fake server that streams the way llama.cpp's llama-server does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from firebox.bench.serve import LoadLevel, run_benchmark
from firebox.bench.stream import RequestSettings, endpoint_url
from firebox.bench.workload import synthetic_requests
from firebox.cli import app
from tests.conftest import LiveServer, serve_in_thread


def bench(*args: str) -> Any:
    return CliRunner().invoke(app, ["bench", "serve", "--no-progress", *args])


@pytest.fixture
def in_flight(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the FakeEngine's requests in flight; `peak` is the most at once."""
    counts = {"now": 0, "peak": 0}
    generate = server.engine.generate
    server.engine.token_delay = 0.002

    async def counting_generate(request: Any) -> AsyncIterator[Any]:
        counts["now"] += 1
        counts["peak"] = max(counts["peak"], counts["now"])
        try:
            async for output in generate(request):
                yield output
        finally:
            counts["now"] -= 1

    monkeypatch.setattr(server.engine, "generate", counting_generate)
    return counts


@pytest.mark.parametrize("concurrency", [1, 4])
def test_closed_loop_against_firebox_counts_usage_tokens(
    server: LiveServer, in_flight: dict[str, int], concurrency: int
) -> None:
    settings = RequestSettings(endpoint_url(server.url, "completions"), server.engine.name, "completions")
    requests = synthetic_requests(8, input_len=6, output_len=5, seed=0)
    [level] = asyncio.run(run_benchmark(settings, requests, [LoadLevel(concurrency, 8)], 0, 30.0, 0))
    assert (level.completed, level.failed, level.concurrency) == (8, 0, concurrency)
    assert level.total_output_tokens == 40 and level.token_count_source == "usage"
    assert level.num_length_mismatch == 0
    assert level.total_input_tokens == sum(len(r.prompt_token_ids) for r in server.engine.submitted)
    assert all(r.sampling.max_tokens == 5 and r.sampling.ignore_eos for r in server.engine.submitted)
    assert level.itl_ms.p50 is not None and level.tpot_ms.p50 is not None
    assert 1 <= in_flight["peak"] <= concurrency
    if concurrency == 1:
        assert in_flight["peak"] == 1


def test_cli_writes_json_per_level(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "r" / "bench.json"
    result = bench(
        "--base-url", f"{server.url}/inference/v1", "--model", server.engine.name, "--concurrency", "1,4",
        "--input-len", "6", "--output-len", "3", "--warmup", "1", "--endpoint", "chat", "--json-out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "output tokens/s" in result.output and "TTFT p99 (ms)" in result.output
    document = json.loads(out.read_text())
    assert set(document) == {"config", "date", "client_cpu_s", "levels"}
    assert document["client_cpu_s"] > 0
    assert document["config"]["endpoint"] == "chat" and document["config"]["request_rate"] is None
    assert "api_key" not in document["config"]
    assert [lv["concurrency"] for lv in document["levels"]] == [1, 4]
    assert [lv["num_requests"] for lv in document["levels"]] == [8, 8]  # max(2 x c, 8)
    for level in document["levels"]:
        assert level["completed"] == 8 and level["total_output_tokens"] == 24
        assert set(level["ttft_ms"]) == {"mean", "p50", "p90", "p99"}
        for key in ("output_throughput", "request_throughput", "total_token_throughput", "duration_s"):
            assert level[key] > 0
    assert len(server.engine.submitted) == 17  # 1 warm-up + 2 levels x 8
    assert len({r.prompt_token_ids for r in server.engine.submitted}) == 17  # no prompt repeats


def test_cli_open_loop_and_failures(server: LiveServer, tmp_path: Path) -> None:
    server.engine.queue_full = True  # every request: HTTP 429
    result = bench(
        "--base-url", server.url, "--model", server.engine.name, "--concurrency", "2",
        "--num-requests", "3", "--request-rate", "1000", "--input-len", "6", "--warmup", "0",
        "--json-out", str(tmp_path / "f.json"),
    )  # fmt: skip
    assert result.exit_code == 1
    level = json.loads((tmp_path / "f.json").read_text())["levels"][0]
    assert (level["completed"], level["failed"], level["request_rate"]) == (0, 3, 1000.0)
    assert level["errors"] and level["errors"][0].startswith("HTTP 429")


def test_cli_rejects_bad_flags(server: LiveServer, tmp_path: Path) -> None:
    conversation = tmp_path / "c.jsonl"
    conversation.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    assert bench("--base-url", server.url, "--model", "m", "--prompt-file", str(conversation)).exit_code == 2
    assert bench("--base-url", server.url, "--model", "m", "--concurrency", "1,x").exit_code == 2
    assert bench("--base-url", server.url, "--model", "m", "--concurrency", "0").exit_code == 2
    assert bench("--base-url", server.url, "--model", "m", "--endpoint", "embeddings").exit_code == 2
    assert bench("--base-url", server.url, "--model", "m", "--warmup", "-1").exit_code == 2
    assert bench("--base-url", server.url, "--model", "m", "--input-len", "0").exit_code == 2


# --- a server that streams as llama-server does -------------------------------------------------


def llama_style_app(with_usage: bool, payloads: list[dict[str, Any]]) -> Any:
    """/v1/completions streaming one token a chunk, an empty finish chunk, and usage only there."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        payloads.append(body)
        num_prompt, num_out = len(body["prompt"].split()), body["max_tokens"]

        async def events() -> AsyncIterator[str]:
            for i in range(num_out):
                yield "data: " + json.dumps({"choices": [{"text": f" t{i}", "index": 0, "finish_reason": None}]})
                yield "\n\n"
                await asyncio.sleep(0)
            last: dict[str, Any] = {"choices": [{"text": "", "index": 0, "finish_reason": "length"}]}
            if with_usage:
                last["usage"] = {"completion_tokens": num_out, "prompt_tokens": num_prompt}
            yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


@pytest.fixture
def llama_style() -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """(URL, payloads seen with usage, payloads seen without): `/` sends usage, `/bare` does not."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with_usage: list[dict[str, Any]] = []
    without: list[dict[str, Any]] = []
    routes = [Mount("/bare", llama_style_app(False, without)), Mount("/", llama_style_app(True, with_usage))]
    with serve_in_thread(Starlette(routes=routes)) as url:
        yield url, with_usage, without


def test_llama_server_style_usage_in_the_final_chunk(llama_style: Any, tmp_path: Path) -> None:
    url, payloads, _ = llama_style
    out = tmp_path / "l.json"
    result = bench("--base-url", url, "--model", "m", "--concurrency", "4", "--output-len", "7",
                   "--input-len", "12", "--warmup", "0", "--json-out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    level = json.loads(out.read_text())["levels"][0]
    assert level["token_count_source"] == "usage" and level["total_output_tokens"] == 8 * 7
    assert level["total_input_tokens"] == 8 * 12
    assert level["itl_ms"]["p50"] is not None
    assert all(p["stream_options"] == {"include_usage": True} and p["ignore_eos"] for p in payloads)
    assert "no usage" not in result.output


def test_server_without_usage_counts_chunks_and_says_so(llama_style: Any, tmp_path: Path) -> None:
    url, _, payloads = llama_style
    out = tmp_path / "b.json"
    result = bench("--base-url", f"{url}/bare", "--model", "m", "--concurrency", "1", "--num-requests", "2",
                   "--output-len", "5", "--warmup", "0", "--json-out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    level = json.loads(out.read_text())["levels"][0]
    assert level["token_count_source"] == "chunks" and level["total_output_tokens"] == 10
    assert "no usage" in result.output and len(payloads) == 2
