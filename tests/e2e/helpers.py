"""Helpers of the end-to-end tests: `firebox serve` as a real subprocess, its Prometheus
metrics, and streams that a test can cut in the middle."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from firebox.config import DEFAULT_MODEL_NAME
from firebox.engine.types import SamplingParams

MODEL = DEFAULT_MODEL_NAME
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0  # seconds; the model loads in a few, but a cold kernel build on a busy machine takes minutes

# The server's engine limits: a small context makes the too-long prompt cheap; a small step budget
# prefills the longer prompts (PARAGRAPH, the system prompts) in chunks; the KV pool holds every
# concurrent stream of these tests without preemption. One torch thread per engine: on a shared
# 2-core machine, OpenMP threads that outnumber the free cores spin and make steps ~10x slower.
MAX_NUM_BATCHED_TOKENS = 48
SERVER_ARGS = (
    *("--max-model-len", "512", "--max-num-batched-tokens", str(MAX_NUM_BATCHED_TOKENS)),
    *("--kv-cache-mib", "64", "--max-num-seqs", "16", "--num-threads", "1"),
)

PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden press adapted from those used to make wine. "
    "Within a few decades, printing shops had spread to more than two hundred cities across Europe, and the "
    "cost of books fell sharply. Scholars could compare identical copies of a text, which helped standardize "
    "spelling and grammar, while pamphlets carried news and arguments faster than ever before."
)

HELLO = ({"role": "user", "content": "Hello"},)

PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at",
    "My favourite recipe for pancakes uses",
    "In 1969, astronauts",
    "The best way to learn a language is",
)


def greedy(max_tokens: int = 16, **kwargs: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kwargs)


GREEDY = greedy()


def offline_llm(**kwargs: Any) -> Any:
    """`firebox.LLM(**kwargs)`, then one torch thread for this process (see SERVER_ARGS)."""
    import torch

    from firebox import LLM

    llm = LLM(**kwargs)
    torch.set_num_threads(1)
    return llm


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def firebox_command() -> list[str]:
    """The `firebox` console script users run, from the interpreter's own environment."""
    script = Path(sys.executable).parent / "firebox"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from firebox.cli import main; sys.argv[0] = 'firebox'; main()"]


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    def log(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/inference/v1", api_key="e2e", max_retries=0, **kwargs)

    def fireworks(self, **kwargs: Any) -> Any:
        import fireworks

        return fireworks.Fireworks(base_url=self.url, api_key="e2e", max_retries=0, **kwargs)

    def tokenize(self, **body: Any) -> list[int]:
        """`POST /v1/tokenize` with `prompt=...` or `messages=...`."""
        response = httpx.post(f"{self.url}/v1/tokenize", json={"model": MODEL, **body}, timeout=30)
        response.raise_for_status()
        return response.json()["tokens"]

    def detokenize(self, tokens: list[int]) -> str:
        response = httpx.post(f"{self.url}/v1/detokenize", json={"model": MODEL, "tokens": tokens}, timeout=30)
        response.raise_for_status()
        return response.json()["prompt"]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0.0 when none)."""
        return sum_samples(httpx.get(f"{self.url}/metrics", timeout=10).text, name, labels)

    def is_idle(self) -> bool:
        """No request running or waiting, and no KV block held."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        names = ("firebox:num_requests_running", "firebox:num_requests_waiting", "firebox:kv_cache_usage")
        return all(sum_samples(text, name, {}) == 0.0 for name in names)


_SAMPLE = re.compile(r"^(?P<name>[^{\s]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def sum_samples(text: str, name: str, labels: dict[str, str]) -> float:
    total = 0.0
    for match in _SAMPLE.finditer(text):
        if match["name"] == name and labels.items() <= dict(_LABEL.findall(match["labels"] or "")).items():
            total += float(match["value"])
    return total


@contextlib.contextmanager
def running_server(data_dir: Path, *args: str, shutdown_grace: float = 5.0) -> Iterator[ServerProcess]:
    """`firebox serve` on a free port with its own data directory, open access; killed on exit
    if a test has not stopped it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREBOX_")}
    env.update(FIREBOX_API_KEY="", COLUMNS="200")  # COLUMNS: rich does not wrap the start-up lines
    command = [*firebox_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--shutdown-grace", str(shutdown_grace), *args]
    data_dir.mkdir(parents=True, exist_ok=True)
    # Files, not pipes: nobody reads a pipe while the tests run, and a full one would block the server.
    stdout, stderr = open(data_dir / "stdout.log", "w"), open(data_dir / "stderr.log", "w")
    # Its own process group: the server and the engine processes it starts can be stopped together.
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, data_dir / "stdout.log", data_dir / "stderr.log")
    try:
        wait_for_health(server)
        yield server
    finally:
        stop_process_group(proc)
        stdout.close()
        stderr.close()


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop), then SIGKILL for whatever of the group is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group `pgid` that still run (zombies excluded), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def wait_for_health(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"firebox serve did not come up (exit code {server.proc.poll()}):\n{server.log()[-4000:]}")


def wait_until_idle(server: ServerProcess, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not server.is_idle():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_with_sigterm(server: ServerProcess, timeout: float) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=timeout)


@dataclass
class StreamReader:
    """Reads one streamed chat completion on a thread (raw SSE lines), so that a test can stop
    the server or close the stream while it runs."""

    url: str
    body: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> StreamReader:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=self.body, timeout=60) as response:
                for line in response.iter_lines():
                    self.lines.append(line)
        except httpx.HTTPError as exc:  # the server may cut the stream when it stops
            self.error = exc

    @property
    def num_data_lines(self) -> int:
        return sum(line.startswith("data: {") for line in self.lines)


def long_stream_body(content: str = "Tell me a long story about a dragon.", max_tokens: int = 400) -> dict[str, Any]:
    """A streamed chat request that cannot end by itself within the test."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
