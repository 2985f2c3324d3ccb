"""`firebox bench serve`: load any OpenAI-compatible server and report throughput and latencies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(help="Benchmarks of a running server.", no_args_is_help=True)


@bench_app.callback()
def _bench() -> None:
    """Benchmarks of a running server."""


@bench_app.command("serve")
def serve(
    base_url: Annotated[str, typer.Option(help="Server root (http://host:port) or its /v1 URL.")],
    model: Annotated[str, typer.Option(help="Model name sent with every request.")],
    endpoint: Annotated[str, typer.Option(help="completions | chat.")] = "completions",
    concurrency: Annotated[str, typer.Option(help="Requests in flight, one run per value: 1,8,32.")] = "1,8,32",
    num_requests: Annotated[
        int | None, typer.Option(help="Requests per run; default max(2 x concurrency, 8).")
    ] = None,
    input_len: Annotated[int, typer.Option(help="Synthetic prompt length, in tokens (about).")] = 128,
    output_len: Annotated[int, typer.Option(help="Tokens to generate per request (max_tokens).")] = 128,
    prompt_file: Annotated[
        Path | None, typer.Option(help=".jsonl ({'prompt'|'messages', 'max_tokens'?} a line) or text, a prompt a line.")
    ] = None,
    request_rate: Annotated[
        float, typer.Option(help="Poisson arrivals per second (open loop); inf: all at once (closed loop).")
    ] = float("inf"),
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured requests sent first, all at once.")] = 2,
    api_key: Annotated[str | None, typer.Option(help="Bearer token.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the prompts and the arrivals.")] = 0,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds one request may take.")] = 600.0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.0,
    ignore_eos: Annotated[bool, typer.Option(help="Generate exactly max_tokens tokens.")] = True,
    json_out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Load an OpenAI-compatible server with streamed requests; report throughput, TTFT, TPOT and ITL."""
    opts = dict(locals())
    from firebox.bench.command import run_serve_benchmark

    run_serve_benchmark(opts)
