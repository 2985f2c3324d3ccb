"""What structured output (constrained decoding) costs a served model: throughput, per-step latency
and the first-request latency of compiling a new schema; and, in process, where a step's time goes.

    .venv/bin/python -m benchmarks.structured_output_bench served [--num-threads 2] [--repeats 3] ...
    .venv/bin/python -m benchmarks.structured_output_bench steps [--batch 1,32] [--out steps.json]

`served` starts one `firebox serve` (the bundled default model, `--num-threads`, a free port, a
throw-away `--data-dir`), then:
1. **Throughput.** At each concurrency (default 1 and 32), the same chat prompts with the same
   `max_tokens` (default 128, `ignore_eos` not set), once without `response_format` and once with a
   `json_schema` one (an object of string, integer, enum and boolean fields, a nested object and an
   array with `maxItems`; every string has a `maxLength`, so documents end). The two run as
   interleaved pairs (free, schema), `--repeats` pairs per level; each pair waits for a quiet CPU
   first, and one that other work skewed runs again (see the options). Constrained documents end
   earlier than free text, so throughput is generated tokens / wall time of the load (the sum of
   `completion_tokens` over the elapsed time), and the per-step cost is the mean inter-token
   latency of each stream (the gaps between its streamed chunks), averaged over the streams.
2. **Compile latency.** Time to first token of a streamed `max_tokens=1` request with no schema,
   with the schema already compiled (cached), and with a schema never seen before (the schema
   plus a property with a unique name), interleaved, `--compile-trials` times each.
3. A few non-streamed constrained completions, checked against the schema (`jsonschema`).
The load is `firebox.bench` (`run_level`, `send_request`, `summarize`); `response_format` goes
through `RequestSettings.extra_body`. The machine's CPU shares during every run (server, this
client, other work) come from `/proc/stat`, as `cpu_vs_llamacpp.sh` records them: on a shared
machine, read the ratios, not the absolute figures. Writes `results.json` (with the tail of the
server log) and `summary.md` to `--out-dir` (default `benchmarks/results/<date>-structured-output/`).

`steps` runs the offline engine (`firebox.offline.LLM`) in this process: B requests at once, free
then constrained, and times every `EngineCore.step()` and, inside it, the grammar's parts.

`--firebox-root DIR` serves (or loads) the firebox package in DIR, e.g. a `git archive` export of
a commit, instead of this checkout's.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from benchmarks.probe import cpu_share, first_token_seconds, is_running
from firebox.bench.report import format_number
from firebox.bench.serve import LoadLevel, run_level
from firebox.bench.stats import summarize
from firebox.bench.stream import RequestResult, RequestSettings, endpoint_url, send_request
from firebox.bench.workload import BenchRequest

REPO = Path(__file__).resolve().parents[1]
FLAGS_SHOWN = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
SERVER_LOG_TAIL_LINES = 80

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"type": "string", "enum": ["engineer", "teacher", "doctor", "artist", "farmer", "gardener"]},
        "employed": {"type": "boolean"},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "country": {"type": "string", "maxLength": 20},
            },
            "required": ["city", "country"],
        },
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "employed", "address", "skills"],
}

JOBS = "gardener baker nurse pilot painter teacher carpenter chemist farmer librarian".split()
PLACES = "Lisbon Oslo Nairobi Lima Osaka Quebec Dublin Hanoi".split()


def response_format(schema: dict[str, Any], name: str = "person") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def new_schema(tag: str) -> dict[str, Any]:
    """SCHEMA plus one required property named after `tag`: a grammar the server never compiled."""
    schema = json.loads(json.dumps(SCHEMA))
    schema["properties"][f"note_{tag}"] = {"type": "string", "maxLength": 12}
    schema["required"].append(f"note_{tag}")
    return schema


def prompts(count: int, max_tokens: int) -> list[BenchRequest]:
    """`count` distinct chat prompts that ask for the schema's fields, the same for both modes."""
    out = []
    for i in range(count):
        job, place = JOBS[i % len(JOBS)], PLACES[(i // len(JOBS)) % len(PLACES)]
        text = (
            f"Describe a fictional {job} who lives in {place} (person number {i}). Give their name, age, "
            "role, whether they are employed, their address (city and country) and up to three skills, as JSON."
        )
        out.append(BenchRequest(text, max_tokens))
    return out


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    import torch  # noqa: PLC0415 - only for its version and CPU capability

    return {
        "cpu_model": fields.get("model name"),
        "cpu_family_model": f"family {fields.get('cpu family')} model {fields.get('model')}",
        "cores_online": os.cpu_count(),
        "hypervisor": "hypervisor" in flags,
        "flags": {flag: flag in flags for flag in FLAGS_SHOWN},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "working_tree_changes": _git("status", "--short", "--untracked-files=no").splitlines(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def load_snapshot() -> dict[str, Any]:
    """`uptime` and the busiest processes of `top -bn1`: what else the machine was doing."""
    top = subprocess.run(["top", "-bn1", "-w", "160"], capture_output=True, text=True).stdout.splitlines()
    return {
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "top": [line.rstrip()[:160] for line in top[:16]],
    }


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which user time already counts
    return total - idle, total


def process_tree_ticks(pid: int) -> int:
    """utime + stime of `pid` and its descendants (the engine process), in ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(stat[11]) + int(stat[12])
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += (task / "children").read_text().split()
    except OSError:
        return 0
    return ticks + sum(process_tree_ticks(int(child)) for child in children)


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """How the CPU was shared over one run: server (with its engine process), client, other work."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuMeter:
        self.start = (cpu_ticks(), process_tree_ticks(self.server_pid), client_cpu_s())
        self.share: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        (busy0, total0), server0, client0 = self.start
        busy1, total1 = cpu_ticks()
        share = cpu_share(
            busy1 - busy0,
            max(total1 - total0, 1),
            process_tree_ticks(self.server_pid) - server0,
            client_cpu_s() - client0,
        )
        self.share = {k: round(v, 1) for k, v in asdict(share).items()}


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `firebox serve` of the default model, started in its own session and stopped at the end."""

    def __init__(self, num_threads: int, extra_args: Sequence[str], firebox_root: Path | None) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="firebox-so-bench-", suffix=".log", delete=False)
        command = [str(Path(sys.executable).parent / "firebox"), "serve", "--port", str(self.port)]
        self.data_dir = tempfile.TemporaryDirectory(prefix="firebox-so-bench-data-")  # not ~/.firebox
        command += ["--num-threads", str(num_threads), "--data-dir", self.data_dir.name, *extra_args]
        self.command = command
        env = dict(os.environ)
        if firebox_root is not None:  # another copy of firebox (an export of a commit), same venv
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(firebox_root), env.get("PYTHONPATH")]))
        started_at = time.time()
        self.process = subprocess.Popen(
            command, cwd=firebox_root or REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.root = f"http://127.0.0.1:{self.port}/inference"
        self.model = "accounts/fireworks/models/smollm2-135m-instruct"
        try:
            self.startup_s = first_token_seconds(self.root, self.model, started_at, 600, self.process.pid)
        except (RuntimeError, TimeoutError):
            print("\n".join(self.stop()[-30:]), file=sys.stderr)
            raise

    def stop(self) -> list[str]:
        """Stop the server (SIGINT, then SIGKILL of its session after 20 s); the log's last lines."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.seek(0)
        lines = self.log.read().splitlines()[-SERVER_LOG_TAIL_LINES:]
        self.log.close()
        os.unlink(self.log.name)
        self.data_dir.cleanup()
        return lines


# --- the measurements --------------------------------------------------------------------------


def per_stream_itl_ms(results: Sequence[RequestResult]) -> float | None:
    """Each completed stream's mean gap between chunks, averaged over the streams (ms)."""
    means = [statistics.fmean(r.itls) * 1000 for r in results if r.is_ok and r.itls]
    return statistics.fmean(means) if means else None


async def wait_until_quiet(max_busy_pct: float, max_wait_s: float) -> float:
    """Wait (at most `max_wait_s`) until the machine's CPU is under `max_busy_pct` busy over 2 s
    (the idle server takes none); the last reading."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, total0 = cpu_ticks()
        await asyncio.sleep(2)
        busy1, total1 = cpu_ticks()
        busy = 100 * (busy1 - busy0) / max(total1 - total0, 1)
        if busy <= max_busy_pct or time.monotonic() >= deadline:
            return round(busy, 1)
        await asyncio.sleep(3)


async def one_run(
    client: httpx.AsyncClient, server: Server, settings: RequestSettings, requests: list[BenchRequest], level: LoadLevel
) -> dict[str, Any]:
    with CpuMeter(server.process.pid) as meter:
        results, elapsed = await run_level(client, settings, requests[: level.num_requests], level, seed=0)
    metrics = summarize(results, elapsed, level.concurrency, None)
    return {
        "concurrency": level.concurrency,
        "num_requests": metrics.num_requests,
        "failed": metrics.failed,
        "errors": metrics.errors,
        "elapsed_s": round(elapsed, 3),
        "completion_tokens": metrics.total_output_tokens,
        "tokens_per_request": metrics.total_output_tokens / max(metrics.completed, 1),
        "output_tok_s": metrics.output_throughput,
        "itl_per_stream_mean_ms": per_stream_itl_ms(results),
        "itl_ms": asdict(metrics.itl_ms),
        "tpot_ms": asdict(metrics.tpot_ms),
        "ttft_ms": asdict(metrics.ttft_ms),
        "cpu_share": meter.share,
    }


async def throughput_runs(
    server: Server, requests: list[BenchRequest], levels: list[LoadLevel], repeats: int, quiet: dict[str, float]
) -> list[dict[str, Any]]:
    """`repeats` interleaved (free, schema) pairs per level. Each pair waits for a quiet machine
    first, and a pair during which other work took more than `quiet["max_other_pct"]` of the CPU
    is run again (up to `quiet["max_attempts"]` in all) while `quiet["deadline"]` (monotonic)
    allows; every attempt is recorded, the last one marked `kept`."""
    url = endpoint_url(server.root, "chat")
    modes = {
        "unconstrained": RequestSettings(url, server.model, "chat", ignore_eos=False),
        "json_schema": RequestSettings(url, server.model, "chat", ignore_eos=False, extra_body={
            "response_format": response_format(SCHEMA)
        }),
    }
    most = max(level.concurrency for level in levels)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    runs: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as client:
        # warm-up: every prompt once (prefills equal for both modes afterwards), the schema compiled
        warm = [BenchRequest(r.prompt, 1) for r in requests]
        await run_level(client, modes["unconstrained"], warm, LoadLevel(most, len(warm)), seed=0)
        await run_level(client, modes["json_schema"], requests[:2], LoadLevel(2, 2), seed=0)
        for repeat in range(repeats):
            for level in levels:
                for attempt in range(int(quiet["max_attempts"])):
                    busy_before = await wait_until_quiet(quiet["max_busy_pct"], quiet["max_wait_s"])
                    pair = []
                    for mode, settings in modes.items():
                        run = {"repeat": repeat, "attempt": attempt, "mode": mode, "busy_before_pct": busy_before}
                        run |= await one_run(client, server, settings, requests, level)
                        pair.append(run)
                        print(
                            f"  repeat {repeat}.{attempt} c={level.concurrency:<3} {mode:<13} "
                            f"{run['output_tok_s']:7.1f} tok/s  "
                            f"ITL/stream {format_number(run['itl_per_stream_mean_ms'], 2):>7} ms  "
                            f"{run['tokens_per_request']:5.1f} tok/req  failed {run['failed']}  cpu {run['cpu_share']}",
                            flush=True,
                        )
                    runs += pair
                    skewed = max(r["cpu_share"]["other"] for r in pair) > quiet["max_other_pct"]
                    if not skewed or time.monotonic() > quiet["deadline"]:
                        break
                for run in pair:
                    run["kept"] = True
    return runs


async def run_compile_trials(server: Server, prompt: str, trials: int) -> list[dict[str, Any]]:
    """TTFT of a one-token streamed request: no schema / the cached schema / a new schema."""
    url = endpoint_url(server.root, "chat")
    request = BenchRequest(prompt, 1)
    base = RequestSettings(url, server.model, "chat", ignore_eos=False)
    cached = RequestSettings(url, server.model, "chat", ignore_eos=False, extra_body={
        "response_format": response_format(SCHEMA)
    })
    out = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600)) as client:
        await send_request(client, base, request)  # the prompt's prefix cached for every mode alike
        await send_request(client, cached, request)
        for trial in range(trials):
            fresh = RequestSettings(url, server.model, "chat", ignore_eos=False, extra_body={
                "response_format": response_format(new_schema(f"{trial}_{uuid.uuid4().hex[:8]}"))
            })
            for mode, settings in (("none", base), ("cached_schema", cached), ("new_schema", fresh)):
                result = await send_request(client, settings, request)
                out.append({
                    "trial": trial,
                    "mode": mode,
                    "ok": result.is_ok,
                    "error": result.error,
                    "ttft_ms": result.ttft * 1000,
                    "latency_ms": result.latency * 1000,
                })
    return out


def validity_check(server: Server, requests: Sequence[BenchRequest]) -> list[dict[str, Any]]:
    """Non-streamed constrained completions: does each parse and validate against SCHEMA?"""
    try:
        import jsonschema  # noqa: PLC0415 - optional
    except ImportError:
        jsonschema = None
    out = []
    with httpx.Client(timeout=600) as client:
        for request in requests:
            body = {
                "model": server.model,
                "messages": [{"role": "user", "content": request.prompt}],
                "max_tokens": request.max_tokens,
                "temperature": 0.0,
                "response_format": response_format(SCHEMA),
            }
            reply = client.post(endpoint_url(server.root, "chat"), json=body).json()
            choice = reply["choices"][0]
            text = choice["message"]["content"]
            try:
                document = json.loads(text)
                valid = True if jsonschema is None else jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
            except json.JSONDecodeError:
                valid = False
            out.append({
                "finish_reason": choice["finish_reason"],
                "completion_tokens": reply["usage"]["completion_tokens"],
                "valid": valid,
                "text": text,
            })
    return out


# --- the summary -------------------------------------------------------------------------------


def _median_spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize_runs(runs: list[dict[str, Any]], trials: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"throughput": {}, "compile_ttft_ms": {}}
    for c in sorted({r["concurrency"] for r in runs}):
        at = {
            m: [r for r in runs if r["concurrency"] == c and r["mode"] == m and r.get("kept")]
            for m in ("unconstrained", "json_schema")
        }
        free, constrained = at["unconstrained"], at["json_schema"]
        tok_s = {m: _median_spread([r["output_tok_s"] for r in rs]) for m, rs in at.items()}
        itl = {m: _median_spread([r["itl_per_stream_mean_ms"] for r in rs]) for m, rs in at.items()}
        summary["throughput"][c] = {
            "output_tok_s": tok_s,
            "itl_per_stream_mean_ms": itl,
            "tokens_per_request": {m: statistics.median(r["tokens_per_request"] for r in rs) for m, rs in at.items()},
            "tok_s_ratio": tok_s["json_schema"]["median"] / tok_s["unconstrained"]["median"],
            "tok_s_ratio_per_repeat": [b["output_tok_s"] / a["output_tok_s"] for a, b in zip(free, constrained)],
            "retried_pairs": sum(1 for r in runs if r["concurrency"] == c and r["attempt"] > 0) // 2,
            "itl_ratio": itl["json_schema"]["median"] / itl["unconstrained"]["median"],
            "itl_ratio_per_repeat": [
                b["itl_per_stream_mean_ms"] / a["itl_per_stream_mean_ms"] for a, b in zip(free, constrained)
            ],
            "other_work_pct_max": max(r["cpu_share"].get("other", 0.0) for r in free + constrained),
            "other_work_pct_per_repeat": [
                max(a["cpu_share"]["other"], b["cpu_share"]["other"]) for a, b in zip(free, constrained)
            ],
            "failed": sum(r["failed"] for r in free + constrained),
        }
    for mode in ("none", "cached_schema", "new_schema"):
        ttfts = [t["ttft_ms"] for t in trials if t["mode"] == mode and t["ok"]]
        summary["compile_ttft_ms"][mode] = {**_median_spread(ttfts), "n": len(ttfts)} if ttfts else None
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    def spread(d: dict[str, float], digits: int = 1) -> str:
        return f"{d['median']:.{digits}f} ({d['min']:.{digits}f}-{d['max']:.{digits}f})"

    lines = [
        "| concurrency | output tok/s, no schema | output tok/s, json_schema | ratio (per repeat) "
        "| ITL/stream ms, no schema | ITL/stream ms, json_schema | ITL ratio | tokens/request (free / schema) "
        "| other work per pair |",
        "|" + " --- |" * 9,
    ]
    for c, t in summary["throughput"].items():
        per_repeat = ", ".join(f"{x:.2f}" for x in t["tok_s_ratio_per_repeat"])
        if t["retried_pairs"]:
            per_repeat += f"; {t['retried_pairs']} pair(s) rerun"
        lines.append(
            f"| {c} | {spread(t['output_tok_s']['unconstrained'])} | {spread(t['output_tok_s']['json_schema'])} "
            f"| {t['tok_s_ratio']:.2f} ({per_repeat}) | {spread(t['itl_per_stream_mean_ms']['unconstrained'], 2)} "
            f"| {spread(t['itl_per_stream_mean_ms']['json_schema'], 2)} | {t['itl_ratio']:.2f} "
            f"| {t['tokens_per_request']['unconstrained']:.1f} / {t['tokens_per_request']['json_schema']:.1f} "
            f"| {', '.join(f'{x:.0f}%' for x in t['other_work_pct_per_repeat'])} |"
        )
    lines += ["", "| first token, max_tokens=1 | TTFT ms, median (min-max) | trials |", "| --- | --- | --- |"]
    for mode, d in summary["compile_ttft_ms"].items():
        lines.append(f"| {mode} | {'-' if d is None else spread(d)} | {0 if d is None else d['n']} |")
    return "\n".join(lines) + "\n"


def main(
    num_threads: Annotated[int, typer.Option(help="The server's --num-threads.")] = 2,
    concurrency: Annotated[str, typer.Option(help="Levels, comma-separated.")] = "1,32",
    requests_c1: Annotated[int, typer.Option(help="Requests per run at concurrency 1.")] = 3,
    rounds: Annotated[int, typer.Option(help="Requests per run above 1: rounds x concurrency.")] = 1,
    max_tokens: Annotated[int, typer.Option()] = 128,
    repeats: Annotated[int, typer.Option(help="Interleaved (free, schema) pairs per level.")] = 3,
    compile_trials: Annotated[int, typer.Option(help="Trials of each of none / cached / new schema.")] = 10,
    out_dir: Annotated[Path | None, typer.Option(help="Default: benchmarks/results/<date>-structured-output.")] = None,
    serve_arg: Annotated[list[str] | None, typer.Option(help="More `firebox serve` flags (repeatable).")] = None,
    firebox_root: Annotated[
        Path | None, typer.Option(help="Serve the firebox package found here (e.g. a `git archive` export).")
    ] = None,
    max_busy_pct: Annotated[float, typer.Option(help="Each pair waits for the CPU to be at most this busy...")] = 25.0,
    quiet_wait_s: Annotated[float, typer.Option(help="... or this many seconds.")] = 60.0,
    max_other_pct: Annotated[float, typer.Option(help="A pair with more CPU taken by other work runs again...")] = 20.0,
    max_attempts: Annotated[int, typer.Option(help="... up to this many attempts in all...")] = 4,
    retry_budget_s: Annotated[float, typer.Option(help="... while under this many seconds from the start.")] = 900.0,
) -> None:
    """Structured output against free text on one `firebox serve`; see the module docstring."""
    started = time.time()
    today = datetime.date.today().isoformat()
    out_dir = out_dir or REPO / "benchmarks" / "results" / f"{today}-structured-output"
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = [
        LoadLevel(c, requests_c1 if c == 1 else rounds * c) for c in (int(x) for x in concurrency.split(","))
    ]
    requests = prompts(max(level.num_requests for level in levels), max_tokens)
    document: dict[str, Any] = {
        "date": today,
        "command": " ".join([".venv/bin/python -m benchmarks.structured_output_bench", *sys.argv[1:]]),
        "machine": machine_info(),
        "load_before": load_snapshot(),
        "schema": SCHEMA,
        "config": {
            "num_threads": num_threads, "levels": [asdict(level) for level in levels], "max_tokens": max_tokens,
            "repeats": repeats, "compile_trials": compile_trials, "ignore_eos": False, "temperature": 0.0,
            "endpoint": "chat", "max_busy_pct": max_busy_pct, "quiet_wait_s": quiet_wait_s,
            "max_other_pct": max_other_pct, "max_attempts": max_attempts, "retry_budget_s": retry_budget_s,
        },
    }
    print(f"machine: {document['machine']['cpu_model']}, loadavg {document['load_before']['loadavg']}", flush=True)
    server = Server(num_threads, serve_arg or [], firebox_root)
    document["server"] = {
        "command": " ".join(server.command), "firebox_root": str(firebox_root or REPO), "startup_s": server.startup_s
    }
    print(f"server up on port {server.port} in {server.startup_s:.1f} s", flush=True)
    try:
        print("throughput (interleaved):", flush=True)
        quiet = {
            "max_busy_pct": max_busy_pct, "max_wait_s": quiet_wait_s, "max_other_pct": max_other_pct,
            "max_attempts": max_attempts, "deadline": time.monotonic() - (time.time() - started) + retry_budget_s,
        }
        document["runs"] = asyncio.run(throughput_runs(server, requests, levels, repeats, quiet))
        print("compile latency:", flush=True)
        document["busy_before_compile_pct"] = asyncio.run(wait_until_quiet(max_busy_pct, quiet_wait_s))
        document["compile_trials"] = asyncio.run(run_compile_trials(server, requests[0].prompt, compile_trials))
        document["validity"] = validity_check(server, requests[:4])
        if not is_running(server.process.pid):
            raise RuntimeError("the server exited during the benchmark")
    finally:
        document["server"]["log_tail"] = server.stop()
    document["load_after"] = load_snapshot()
    document["summary"] = summarize_runs(document["runs"], document["compile_trials"])
    document["wall_s"] = round(time.time() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    markdown = summary_markdown(document["summary"])
    valid = sum(v["valid"] for v in document["validity"])
    markdown += f"\nconstrained completions valid against the schema: {valid} / {len(document['validity'])}\n"
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"load before {document['load_before']['loadavg']}, after {document['load_after']['loadavg']}; "
          f"{document['wall_s']} s in all; results in {out_dir}")


# --- the engine's step, in process ------------------------------------------------------------

STEP_PARTS = {  # what the step profile times: (module, attribute holding the callable), its label
    ("firebox.engine.structured_output", "GrammarCompiler.fill_bitmask"): "fill_bitmask",
    ("firebox.engine.structured_output", "RequestGrammar.accept"): "consume_token",
    ("firebox.engine.runner.sampling_batch", "build_allowed_tokens"): "build_allowed_tokens",
    ("firebox.engine.runner.grammar_mask", "AllowedTokens.mask_"): "mask_",
    ("firebox.engine.runner.sampler", "Sampler.__call__"): "sampler",
    ("firebox.engine.runner.model_runner", "ModelRunner.execute"): "execute",
}


def _time_parts(acc: dict[str, float]) -> None:
    """Wrap each STEP_PARTS callable so that its wall time adds up in `acc` (this process only)."""
    import importlib  # noqa: PLC0415

    for (module_name, path), label in STEP_PARTS.items():
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name)

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                acc[_label] = acc.get(_label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)


def step_profile(batches: Sequence[int], repeats: int, max_tokens: int, num_threads: int) -> dict[str, Any]:
    """The offline engine (`firebox.offline.LLM`, no server, no API process): B chat requests at
    once, free then json_schema, `repeats` times; every `EngineCore.step()` timed, and inside it
    the grammar's parts (core: fill_bitmask, consume_token; runner: build_allowed_tokens, mask_),
    the sampler and the runner's execute. Medians over the steps in which all B rows sample."""
    import firebox  # noqa: PLC0415 - the one PYTHONPATH chose
    from firebox.engine.types import EngineRequest, SamplingParams  # noqa: PLC0415
    from firebox.offline import LLM  # noqa: PLC0415
    from firebox.serving.prompt import render_chat  # noqa: PLC0415
    from firebox.serving.structured_output import json_schema_spec  # noqa: PLC0415

    acc: dict[str, float] = {}
    _time_parts(acc)
    llm = LLM(num_threads=num_threads)
    spec = json_schema_spec(SCHEMA)
    count = iter(range(10**9))

    def run(num: int, constrained: bool) -> dict[str, Any]:
        for request in prompts(num, max_tokens):
            text = render_chat(llm.tokenizer, [{"role": "user", "content": request.prompt}], True)
            llm.core.add_request(EngineRequest(
                f"r{next(count)}", tuple(llm.tokenizer.encode(text)),
                SamplingParams(temperature=0.0, max_tokens=max_tokens), time.monotonic(),
                structured_output=spec if constrained else None,
            ))  # fmt: skip
        steps, tokens, wall_start = [], 0, time.perf_counter()
        while llm.core.has_unfinished():
            acc.clear()
            start = time.perf_counter()
            outputs = llm.core.step()
            elapsed = time.perf_counter() - start
            tokens += sum(len(o.new_token_ids) for o in outputs)
            steps.append((elapsed, sum(1 for o in outputs if o.new_token_ids), dict(acc)))
        wall = time.perf_counter() - wall_start
        full = [step for step in steps if step[1] == num] or steps
        parts = {label: statistics.median(s[2].get(label, 0.0) * 1000 for s in full) for label in STEP_PARTS.values()}
        return {
            "batch": num, "mode": "json_schema" if constrained else "unconstrained", "tokens": tokens,
            "wall_s": round(wall, 3), "tok_s": tokens / wall, "steps": len(steps), "full_batch_steps": len(full),
            "step_ms_median": statistics.median(s[0] * 1000 for s in full),
            "step_ms_min": min(s[0] * 1000 for s in full),
            "parts_ms_median": parts,
        }  # fmt: skip

    runs = []
    for num in batches:
        run(num, True)  # warm-up: kernels, prefix cache, the grammar compiled
        run(num, False)
        for repeat in range(repeats):
            for constrained in (False, True):
                runs.append({"repeat": repeat, **run(num, constrained)})
                r = runs[-1]
                print(
                    f"  B={num:<3} {r['mode']:<13} step median {r['step_ms_median']:7.2f} ms "
                    f"(min {r['step_ms_min']:.2f}) over {r['full_batch_steps']} steps; "
                    + " ".join(f"{k} {v:.2f}" for k, v in r["parts_ms_median"].items() if v),
                    flush=True,
                )
    return {"firebox": str(Path(firebox.__file__).parent), "runs": runs, "summary": summarize_steps(runs)}


def summarize_steps(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out = {}
    for num in sorted({r["batch"] for r in runs}):
        at = {m: [r for r in runs if r["batch"] == num and r["mode"] == m] for m in ("unconstrained", "json_schema")}
        step = {m: statistics.median(r["step_ms_median"] for r in rs) for m, rs in at.items()}
        parts = {
            m: {k: statistics.median(r["parts_ms_median"][k] for r in rs) for k in STEP_PARTS.values()}
            for m, rs in at.items()
        }
        schema, free = parts["json_schema"], parts["unconstrained"]
        grammar = {
            "fill_bitmask": schema["fill_bitmask"],
            "consume_token": schema["consume_token"],
            "build_allowed_tokens": schema["build_allowed_tokens"],
            "mask_": schema["mask_"],
            "sampler_extra (mask_ + logits clone)": schema["sampler"] - free["sampler"],
        }
        overhead = grammar["fill_bitmask"] + grammar["consume_token"] + grammar["build_allowed_tokens"]
        overhead += grammar["sampler_extra (mask_ + logits clone)"]
        out[num] = {
            "step_ms_median": step,
            "parts_ms_median": parts,
            "grammar_ms_per_step": grammar,
            "grammar_overhead_ms": overhead,
            "overhead_share_of_free_step": overhead / step["unconstrained"],
            "projected_ratio": step["unconstrained"] / (step["unconstrained"] + overhead),
            "measured_step_ratio": step["unconstrained"] / step["json_schema"],
        }
    return out


app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
app.command("served", help="The served benchmark (throughput, ITL, compile latency).")(main)


@app.command("steps")
def steps_command(
    batch: Annotated[str, typer.Option(help="Requests at once, one profile per value.")] = "1,32",
    repeats: Annotated[int, typer.Option()] = 3,
    max_tokens: Annotated[int, typer.Option()] = 128,
    num_threads: Annotated[int, typer.Option()] = 2,
    out: Annotated[Path | None, typer.Option(help="Write the profile as JSON here.")] = None,
    firebox_root: Annotated[Path | None, typer.Option(help="Profile the firebox package found here.")] = None,
) -> None:
    """Per-step cost of constrained decoding in the engine itself, by part (in process, no server)."""
    if firebox_root is not None and os.environ.get("FIREBOX_SO_BENCH_CHILD") != "1":
        env = dict(os.environ, FIREBOX_SO_BENCH_CHILD="1", PYTHONPATH=os.pathsep.join([str(firebox_root), str(REPO)]))
        args = ["--batch", batch, "--repeats", str(repeats), "--max-tokens", str(max_tokens)]
        args += ["--num-threads", str(num_threads)] + ([] if out is None else ["--out", str(out.resolve())])
        command = [sys.executable, str(Path(__file__).resolve()), "steps", *args]
        child = subprocess.run(command, cwd=firebox_root, env=env)
        raise typer.Exit(child.returncode)
    document = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([".venv/bin/python -m benchmarks.structured_output_bench", *sys.argv[1:]]),
        "load_before": load_snapshot(),
        "config": {"batch": batch, "repeats": repeats, "max_tokens": max_tokens, "num_threads": num_threads},
    }
    document |= step_profile([int(x) for x in batch.split(",")], repeats, max_tokens, num_threads)
    document["load_after"] = load_snapshot()
    for num, t in document["summary"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in t["grammar_ms_per_step"].items())
        print(
            f"B={num}: step {t['step_ms_median']['unconstrained']:.2f} ms free / "
            f"{t['step_ms_median']['json_schema']:.2f} ms schema; grammar {t['grammar_overhead_ms']:.2f} ms per step "
            f"({parts}); projected tok/s ratio {t['projected_ratio']:.2f}, "
            f"measured step ratio {t['measured_step_ratio']:.2f}"
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    app()
