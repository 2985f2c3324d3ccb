"""What `firebox bench serve` does (bench/cli.py holds only its flags, so that every `firebox`
command starts without importing the load generator)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from firebox.bench.report import levels_table, notes, results_document, write_json
from firebox.bench.serve import LoadLevel, default_num_requests, requests_needed, run_benchmark
from firebox.bench.stats import LevelMetrics
from firebox.bench.stream import RequestSettings, endpoint_url
from firebox.bench.workload import BenchRequest, file_requests, synthetic_requests

REPORT_WIDTH = 120


def parse_concurrency(text: str) -> list[int]:
    """`1,8,32` -> [1, 8, 32]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected positive integers separated by commas, got {text!r}")
    return values


def build_levels(concurrencies: Sequence[int], num_requests: int | None, request_rate: float) -> list[LoadLevel]:
    try:
        return [LoadLevel(c, num_requests or default_num_requests(c), request_rate) for c in concurrencies]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def build_requests(
    total: int, prompt_file: Path | None, input_len: int, output_len: int, seed: int
) -> list[BenchRequest]:
    try:
        if prompt_file is not None:
            return file_requests(prompt_file, total, output_len)
        return synthetic_requests(total, input_len, output_len, seed)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def run_with_progress(
    settings: RequestSettings,
    requests: list[BenchRequest],
    levels: list[LoadLevel],
    opts: dict[str, Any],
    console: Console,
) -> list[LevelMetrics]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not opts["progress"]) as progress:
        tasks = [progress.add_task("warm-up", total=opts["warmup"], visible=opts["warmup"] > 0)]
        tasks += [progress.add_task(f"concurrency {level.concurrency}", total=level.num_requests) for level in levels]
        benchmark = run_benchmark(
            settings,
            requests,
            levels,
            num_warmup=opts["warmup"],
            timeout=opts["timeout"],
            seed=opts["seed"],
            on_done=lambda phase: progress.advance(tasks[phase]),
        )
        return asyncio.run(benchmark)


def run_serve_benchmark(opts: dict[str, Any]) -> None:
    """The `serve` command with its flags in `opts`."""
    model, endpoint, request_rate, json_out = opts["model"], opts["endpoint"], opts["request_rate"], opts["json_out"]
    try:
        settings = RequestSettings(
            endpoint_url(opts["base_url"], endpoint), model, endpoint, opts["api_key"],
            opts["temperature"], opts["ignore_eos"],
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--endpoint") from exc
    levels = build_levels(parse_concurrency(opts["concurrency"]), opts["num_requests"], request_rate)
    requests = build_requests(
        requests_needed(levels, opts["warmup"]), opts["prompt_file"], opts["input_len"], opts["output_len"], opts["seed"]
    )
    if endpoint == "completions" and any(r.messages is not None for r in requests):
        raise typer.BadParameter("a prompt file with 'messages' needs --endpoint chat", param_hint="--prompt-file")
    console = Console(stderr=True)
    metrics = run_with_progress(settings, requests, levels, opts, console)
    out = Console()
    if not out.is_terminal:  # a log file: rich would wrap the table at 80 columns
        out.width = REPORT_WIDTH
    out.print(levels_table(metrics, f"{model} at {settings.url}"))
    for line in notes(metrics):
        out.print(f"[yellow]note[/] {line}")
    if json_out is not None:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in opts.items() if k not in ("api_key", "progress")}
        config["request_rate"] = None if request_rate == float("inf") else request_rate
        write_json(json_out, results_document(config, metrics))
        out.print(f"results written to {json_out}")
    if any(level.completed == 0 for level in metrics):
        raise typer.Exit(1)
