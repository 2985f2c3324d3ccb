"""`firebox serve --config FILE` and `--engine-process/--no-engine-process`: flags -> configs, and
one whole run of the real command over a catalog (serverless model in an engine process, a
deployment with its replica, clean shutdown)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from firebox.cli import app, build_server_config
from firebox.config import EngineOptions, ServerConfig
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
ENGINE = EngineOptions(device="cpu", num_threads=1, max_num_seqs=8, max_num_batched_tokens=256, max_waiting=16,
                       num_kv_blocks=64, kv_cache_mib=64)


def test_server_config_from_a_catalog(catalog_file: Path) -> None:
    catalog_file.write_text(catalog_file.read_text().replace("serverless = false\nmax_model_len = 512", "max_model_len = 512"))
    config = build_server_config(["default"], ENGINE, ServerConfig(catalog_path=catalog_file, engine_process=False))
    assert [e.model.name for e in config.engines] == ["accounts/acme/models/tiny"]  # the serverless one only
    tiny = config.engines[0]
    assert tiny.model.max_model_len == 512 and tiny.model.generation_overrides == (("temperature", 0.5),)
    assert tiny.cache.num_blocks == 64 and tiny.device.num_threads == 1  # the command line's engine flags
    assert config.catalog_path == catalog_file and not config.engine_process
    assert config.engine_defaults.max_num_seqs == 8


def test_serve_flags(monkeypatch, catalog_file: Path) -> None:
    seen = []

    def fake_run_server(config, shutdown_grace, log_level="info") -> None:
        seen.append(config)

    monkeypatch.setattr("firebox.cli.run_server", fake_run_server)
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--no-engine-process"], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert runner.invoke(app, ["serve", "--config", str(catalog_file)], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert [c.engine_process for c in seen] == [False, True] and seen[1].engines == ()
    both = runner.invoke(app, ["serve", "--config", str(catalog_file), "-m", "default"], env={"FIREBOX_API_KEY": ""})
    assert both.exit_code == 2 and "not both" in both.output
    helped = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--config" in helped and "--engine-process" in helped and "--no-engine-process" in helped


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


KEY = "e2e-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_serve_a_catalog_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(textwrap.dedent(f"""
        [[models]]
        id = "tiny"
        source = "dummy:{tiny_model_dir}"
        max_model_len = 256

        [[models.deployments]]
        id = "tiny-dedicated"
        min_replica_count = 1
    """))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--config", str(catalog), "--port", str(port), "--data-dir", str(tmp_path / "data"), "--num-threads", "1",
            "--num-kv-blocks", "32", "--log-level", "warning", "--shutdown-grace", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIREBOX_API_KEY": KEY}  # an open server has no control plane
    firebox = Path(sys.executable).parent / "firebox"  # the console script, as users run it
    log = tmp_path / "server.log"  # a file, not a pipe: nobody reads it while the server runs
    with open(log, "w") as log_file:
        proc = subprocess.Popen([str(firebox), "serve", *args], cwd=REPO, env=env, stdout=log_file, stderr=log_file)
    try:
        deployment = f"{url}/v1/accounts/fireworks/deployments/tiny-dedicated"
        assert _wait_for_replica(deployment, proc), log.read_text()
        assert proc.poll() is None, log.read_text()
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]] == ["accounts/fireworks/models/tiny"]
        for model in ("tiny", "accounts/fireworks/deployments/tiny-dedicated"):
            body = {"model": model, "prompt": "Hello", "max_tokens": 3, "ignore_eos": True}
            answer = httpx.post(f"{url}/v1/completions", json=body, headers=AUTH, timeout=60)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
        assert answer.headers["fireworks-deployment"] == "accounts/fireworks/deployments/tiny-dedicated"
        children = _children(proc.pid)
        assert len(children) >= 2  # the serverless engine and the replica, each its own process
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10)


def _wait_for_replica(deployment_url: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll gently (the server is loading on the same two cores) until the replica is ready."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2, headers=AUTH) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.get(deployment_url).json().get("replicaStats", {}).get("readyReplicaCount") == 1:
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
    return False


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found = []
    for task in tasks.iterdir():
        children = (task / "children").read_text().split()
        found.extend(int(c) for c in children)
    return found
