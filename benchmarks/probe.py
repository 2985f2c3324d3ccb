"""What cpu_vs_llamacpp.sh measures around the load itself: a server's start-up to its first
served token, and how the machine's CPU was shared while a load ran (server, client, other work)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

POLL_INTERVAL_S = 0.1


def is_running(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (a dead child its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def first_token_seconds(
    base_url: str, model: str, started_at: float, timeout: float, pid: int | None = None
) -> float:
    """Poll with a one-token completion until one succeeds; seconds since `started_at` (epoch).

    One client for all the polls: making a client per poll costs CPU the starting server needs."""
    url = f"{base_url.rstrip('/')}/v1/completions"
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
    with httpx.Client(timeout=timeout) as client:
        while time.time() - started_at < timeout:
            if pid is not None and not is_running(pid):
                raise RuntimeError(f"the server (pid {pid}) exited before serving a completion")
            try:
                response = client.post(url, json=body)
                if response.status_code == 200 and response.json().get("choices"):
                    return time.time() - started_at
            except httpx.HTTPError:
                pass
            time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"no completion from {url} within {timeout:.0f} s")


@dataclass(frozen=True, slots=True)
class CpuShare:
    """Percent of the whole machine's CPU time over one load run."""

    server: float
    client: float
    other: float  # everything else: what skews the figures

    def describe(self) -> str:
        return f"server {self.server:.0f}%, client {self.client:.0f}%, other work {self.other:.0f}%"


def cpu_share(busy_ticks: int, total_ticks: int, server_ticks: int, client_cpu_s: float) -> CpuShare:
    """Shares from /proc/stat tick deltas (all CPUs) and the client's own CPU seconds."""
    if total_ticks <= 0:
        raise ValueError(f"total_ticks must be > 0, got {total_ticks}")
    client_ticks = client_cpu_s * os.sysconf("SC_CLK_TCK")
    other = max(busy_ticks - server_ticks - client_ticks, 0)
    return CpuShare(*(100 * ticks / total_ticks for ticks in (server_ticks, client_ticks, other)))


def annotate_cpu_share(results: Path, busy_ticks: int, total_ticks: int, server_ticks: int) -> CpuShare:
    """Add `cpu_share` to a `firebox bench serve` JSON file (which holds the client's `client_cpu_s`)."""
    document = json.loads(results.read_text(encoding="utf-8"))
    share = cpu_share(busy_ticks, total_ticks, server_ticks, document["client_cpu_s"])
    document["cpu_share"] = asdict(share)
    results.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return share
