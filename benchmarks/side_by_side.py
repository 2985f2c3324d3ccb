"""The command-line helpers of cpu_vs_llamacpp.sh (run from the repo root with `python -m`):

    python -m benchmarks.side_by_side probe --base-url URL --model NAME --started-at EPOCH [--pid PID]
    python -m benchmarks.side_by_side cpu-share --busy-ticks B --total-ticks T --server-ticks S [--results R.json]
    python -m benchmarks.side_by_side prefill --base-url URL --model NAME --server firebox|llamacpp \
        --prompt-len N --json-out P.json
    python -m benchmarks.side_by_side compare --firebox F.json ... --llamacpp L.json ... \
        --firebox-startup S --llamacpp-startup S [--firebox-prefill P.json --llamacpp-prefill P.json] [--out-dir DIR]

`compare` puts `firebox bench serve` results (and `prefill` results) side by side, with
firebox/llama.cpp ratios and the targets of issues 4 and 13, and flags rows that other work on the
machine may have skewed.
"""

from __future__ import annotations

import json
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.prefill import SERVERS, measure_prefill, prefill_document
from benchmarks.probe import annotate_cpu_share, cpu_share, first_token_seconds
from firebox.bench.report import format_number

app = typer.Typer(help=__doc__, no_args_is_help=True)

# issue 4's targets, as firebox / llama.cpp ratios
OUTPUT_TARGETS = {1: 1.2, 32: 3.0}  # concurrency -> least output tokens/s ratio
TTFT_TARGET = (32, 0.5)  # at this concurrency, the largest TTFT p50 ratio
STARTUP_SLACK_S = 2.0  # start-up no more than llama-server's + 2 s
PREFILL_TARGET = 1.5  # issue 13: the least prompt tokens/s ratio of a long prompt's prefill
MAX_OTHER_WORK_PCT = 10.0  # more CPU than this taken by other work: the row is not trustworthy
REPORT_WIDTH = 120
SKEWED_EXIT_CODE = 3  # cpu-share: other work took more than --max-other-pct
Levels = dict[int, dict[str, Any]]  # concurrency -> a level of a results file (+ its run's cpu_share)


@dataclass(frozen=True, slots=True)
class Row:
    """One compared figure: both values, their ratio and, where issue 4 sets one, the target."""

    metric: str
    firebox: float | None
    llamacpp: float | None
    ratio: float | None  # firebox / llama.cpp
    target: str = ""
    is_met: bool | None = None  # None: no target
    other_work_pct: tuple[float | None, float | None] = (None, None)  # CPU others took: firebox's run, llama.cpp's


def load_levels(paths: list[Path]) -> Levels:
    """The levels of one server's results files, each with the `cpu_share` of the run it came from."""
    levels: Levels = {}
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        for level in document["levels"]:
            levels[level["concurrency"]] = {**level, "cpu_share": document.get("cpu_share")}
    return levels


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _other_work(level: dict[str, Any]) -> float | None:
    share = level.get("cpu_share")
    return None if share is None else share["other"]


def _row(metric: str, fb: dict[str, Any], lc: dict[str, Any], value: Any, bound: tuple[str, float] | None) -> Row:
    """`value(level)` -> the figure; `bound`: (">=" or "<=", the ratio issue 4 asks for) or None."""
    fb_value, lc_value = value(fb), value(lc)
    ratio, other = _ratio(fb_value, lc_value), (_other_work(fb), _other_work(lc))
    if bound is None:
        return Row(metric, fb_value, lc_value, ratio, other_work_pct=other)
    op, limit = bound
    met = None if ratio is None else (ratio >= limit if op == ">=" else ratio <= limit)
    return Row(metric, fb_value, lc_value, ratio, f"{op} {limit:g}x", met, other)


def compare_rows(
    firebox: Levels,
    llamacpp: Levels,
    startup: tuple[float, float],
    prefill: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> list[Row]:
    """Output tokens/s at every shared concurrency, TTFT p50 at the highest, prefill tokens/s
    (from two `prefill` results files, when given), start-up time."""
    shared = sorted(set(firebox) & set(llamacpp))
    if not shared:
        raise ValueError("the two results share no concurrency level")
    rows = []
    for c in shared:
        bound = (">=", OUTPUT_TARGETS[c]) if c in OUTPUT_TARGETS else None
        rows.append(_row(f"output tok/s, c={c}", firebox[c], llamacpp[c], lambda m: m["output_throughput"], bound))
    c = shared[-1]
    bound = ("<=", TTFT_TARGET[1]) if c == TTFT_TARGET[0] else None
    rows.append(_row(f"TTFT p50 ms, c={c}", firebox[c], llamacpp[c], lambda m: m["ttft_ms"]["p50"], bound))
    if prefill is not None:
        fb_prefill, lc_prefill = prefill
        metric = f"prefill tok/s, {fb_prefill['prompt_tokens']:g}-token prompt"
        bound = (">=", PREFILL_TARGET)
        rows.append(_row(metric, fb_prefill, lc_prefill, lambda m: m["prefill_tokens_per_s"], bound))
    fb, lc = startup
    target = f"<= llama.cpp + {STARTUP_SLACK_S:g} s"
    rows.append(Row("start-up to first token, s", fb, lc, _ratio(fb, lc), target, fb <= lc + STARTUP_SLACK_S))
    return rows


def skewed_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if any(p is not None and p > MAX_OTHER_WORK_PCT for p in r.other_work_pct)]


HEADERS = ["metric", "firebox", "llama.cpp", "firebox / llama.cpp", "target", "met", "other work (fb / lc)"]


def _cells(row: Row) -> list[str]:
    met = {None: "", True: "yes", False: "no"}[row.is_met]
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    other = ""
    if row.other_work_pct != (None, None):
        other = " / ".join(f"{format_number(p, 0)}%" for p in row.other_work_pct)
    return [row.metric, format_number(row.firebox), format_number(row.llamacpp), ratio, row.target, met, other]


def rows_table(rows: list[Row]) -> Table:
    table = Table(title="firebox vs llama.cpp (same GGUF, same threads, same machine, one run)")
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def rows_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@app.command()
def probe(
    base_url: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    started_at: Annotated[float, typer.Option(help="When the server process was started (epoch seconds).")],
    timeout: Annotated[float, typer.Option()] = 600.0,
    pid: Annotated[int | None, typer.Option(help="The server's process: give up when it exits.")] = None,
) -> None:
    """Print the seconds from the server's start to its first served completion, and the CPU
    seconds this probe itself used meanwhile."""
    try:
        seconds = first_token_seconds(base_url, model, started_at, timeout, pid)
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{seconds:.2f} {usage.ru_utime + usage.ru_stime:.2f}")


@app.command("prefill")
def prefill_command(
    base_url: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    server: Annotated[str, typer.Option(help=f"{' | '.join(SERVERS)}: how to turn its prompt cache off.")],
    prompt_len: Annotated[int, typer.Option(help="Prompt length in words (one token each).")],
    json_out: Annotated[Path, typer.Option()],
    num_requests: Annotated[int, typer.Option(help="Timed requests; the median is reported.")] = 5,
    warmup: Annotated[int, typer.Option(help="Unmeasured requests first.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = 600.0,
) -> None:
    """Time the prefill of long prompts, one request at a time, and write the results file."""
    try:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            samples = measure_prefill(client, model, server, prompt_len, num_requests, warmup, seed)
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    document = prefill_document(server, prompt_len, samples)
    json_out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    speed = f"{document['prefill_tokens_per_s']:.1f} tok/s"
    typer.echo(f"{server}: prefill of {document['prompt_tokens']:g} prompt tokens at {speed} (median)", err=True)


@app.command("cpu-share")
def cpu_share_command(
    busy_ticks: Annotated[int, typer.Option()],
    total_ticks: Annotated[int, typer.Option()],
    server_ticks: Annotated[int, typer.Option()],
    results: Annotated[Path | None, typer.Option(help="A results file: its client_cpu_s; the share goes in.")] = None,
    client_cpu_s: Annotated[float, typer.Option(help="The client's CPU seconds, without --results.")] = 0.0,
    max_other_pct: Annotated[float, typer.Option(help="Exit with status 3 when other work took more.")] = 100.0,
) -> None:
    """Print how the CPU was shared during a run (and record it in its results file)."""
    if results is None:
        share = cpu_share(busy_ticks, total_ticks, server_ticks, client_cpu_s)
    else:
        share = annotate_cpu_share(results, busy_ticks, total_ticks, server_ticks)
    print(share.describe())
    if share.other > max_other_pct:
        raise typer.Exit(SKEWED_EXIT_CODE)


@app.command()
def compare(
    firebox: Annotated[list[Path], typer.Option(help="firebox's results files (repeatable).")],
    llamacpp: Annotated[list[Path], typer.Option(help="llama.cpp's results files (repeatable).")],
    firebox_startup: Annotated[float, typer.Option()],
    llamacpp_startup: Annotated[float, typer.Option()],
    firebox_prefill: Annotated[Path | None, typer.Option(help="firebox's `prefill` results file.")] = None,
    llamacpp_prefill: Annotated[Path | None, typer.Option(help="llama.cpp's `prefill` results file.")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Write summary.json and summary.md here.")] = None,
) -> None:
    """Print the side-by-side table of `firebox bench serve --json-out` (and `prefill`) files."""
    if (firebox_prefill is None) != (llamacpp_prefill is None):
        raise typer.BadParameter("give both --firebox-prefill and --llamacpp-prefill, or neither")
    prefill = None
    if firebox_prefill is not None and llamacpp_prefill is not None:
        prefill = (json.loads(firebox_prefill.read_text()), json.loads(llamacpp_prefill.read_text()))
    startup = (firebox_startup, llamacpp_startup)
    rows = compare_rows(load_levels(firebox), load_levels(llamacpp), startup, prefill)
    console = Console()
    if not console.is_terminal:  # a log file: rich would wrap the table at 80 columns
        console.width = REPORT_WIDTH
    console.print(rows_table(rows))
    for row in skewed_rows(rows):
        why = f"other work took more than {MAX_OTHER_WORK_PCT:g}% of the CPU during a run: re-run on an idle machine"
        console.print(f"[bold red]warning[/] {row.metric}: {why}")
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        (out_dir / "summary.md").write_text(rows_markdown(rows))


if __name__ == "__main__":
    app()
