"""`firebox serve`: flags -> configs, the help text, and a whole run in a subprocess (start-up log,
serving, graceful shutdown that aborts what is still running and shuts the engines down)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from firebox.cli import app, build_server_config, parse_model_spec
from firebox.config import DEFAULT_MODEL_NAME, MIB, EngineConfig, EngineOptions, ServerConfig, engine_config
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
ENGINE = EngineOptions(device="cpu", max_num_seqs=8, max_num_batched_tokens=256, max_waiting=16, kv_cache_mib=64)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("default", ("default", DEFAULT_MODEL_NAME)),
        (
            "/m/SmolLM2-135M-Instruct.Q4_1.gguf",
            ("/m/SmolLM2-135M-Instruct.Q4_1.gguf", "accounts/fireworks/models/smollm2-135m-instruct.q4_1"),
        ),
        ("/models/Qwen3-0.6B/", ("/models/Qwen3-0.6B/", "accounts/fireworks/models/qwen3-0.6b")),
        (
            "dummy:/cfg/Llama 3 8B/config.json",
            ("dummy:/cfg/Llama 3 8B/config.json", "accounts/fireworks/models/llama-3-8b"),
        ),
        ("/m/x.gguf=tiny", ("/m/x.gguf", "accounts/fireworks/models/tiny")),
        ("default=accounts/me/models/smol", ("default", "accounts/me/models/smol")),
    ],
)
def test_model_specs(spec: str, expected: tuple[str, str]) -> None:
    assert parse_model_spec(spec) == expected


def test_bad_model_names_are_refused() -> None:
    with pytest.raises(typer.BadParameter):
        parse_model_spec("default=accounts/me/deployments/x")
    with pytest.raises(typer.BadParameter, match="same name"):
        build_server_config(["/a/m.gguf", "/b/m.gguf"], ENGINE, ServerConfig())


def test_server_config_from_flags(tmp_path: Path) -> None:
    server = ServerConfig(api_keys=("k",), data_dir=tmp_path)
    config = build_server_config(["default", "/m/other.gguf"], replace(ENGINE, max_model_len=1024), server)
    assert [e.model.name for e in config.engines] == [DEFAULT_MODEL_NAME, "accounts/fireworks/models/other"]
    assert config.api_keys == ("k",) and config.data_dir == tmp_path
    assert config.engines[1].model.max_model_len == 1024 and config.engines[0].scheduler.max_num_seqs == 8
    assert config.engines[0].cache.memory_bytes == 64 * 1024 * 1024


def test_engine_options_become_the_component_configs() -> None:
    assert engine_config(EngineOptions()) == EngineConfig()  # the same defaults
    config = engine_config(replace(ENGINE, dtype="bfloat16", quantization="int8", kv_cache_dtype="float16",
                                   num_kv_blocks=32, prefix_caching=False, num_threads=2, attention_backend="torch"))
    assert (config.model.dtype, config.model.quantization) == ("bfloat16", "int8")
    cache = config.cache
    assert (cache.num_blocks, cache.memory_bytes, cache.kv_cache_dtype) == (32, 64 * MIB, "float16")
    assert not config.cache.enable_prefix_caching and config.scheduler.max_waiting == 16
    assert (config.device.device, config.device.num_threads, config.device.attention_backend) == ("cpu", 2, "torch")


@pytest.mark.parametrize("field", ["dtype", "quantization", "kv_cache_dtype", "attention_backend", "device"])
def test_each_engine_choice_is_checked_once_by_the_config(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        engine_config(replace(ENGINE, **{field: "float8"}))
    if field != "attention_backend":  # no flag for it
        result = CliRunner().invoke(app, ["serve", f"--{field.replace('_', '-')}", "float8"])
        assert result.exit_code == 2 and field in result.output


def test_serve_help_lists_the_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--model",
        "--api-key",
        "--data-dir",
        "--max-num-seqs",
        "--max-model-len",
        "--dtype",
    ):
        assert option in result.output
    assert "FIREBOX_API_KEY" in result.output


def test_serve_without_arguments_serves_the_default_model_locally(monkeypatch) -> None:
    seen = []

    def fake_run_server(config, shutdown_grace, log_level="info") -> None:
        seen.append(config)

    monkeypatch.setattr("firebox.cli.run_server", fake_run_server)
    assert CliRunner().invoke(app, ["serve"], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert (
        CliRunner()
        .invoke(app, ["serve", "-m", "default", "-m", "/x/b.gguf=b"], env={"FIREBOX_API_KEY": "k1"})
        .exit_code
        == 0
    )
    plain, keyed = seen
    assert (plain.host, plain.port, plain.api_keys) == ("127.0.0.1", 8000, ())
    assert [e.model.name for e in plain.engines] == [DEFAULT_MODEL_NAME] and plain.engines[0].model.source == "default"
    assert keyed.api_keys == ("k1",) and [e.model.name for e in keyed.engines] == [
        DEFAULT_MODEL_NAME,
        "accounts/fireworks/models/b",
    ]


FAKE_LAUNCH = textwrap.dedent(
    """
    import json, sys, types
    from tests.fakes import FakeEngine

    def start_engine(config, progress):
        progress(0, 2)
        progress(2, 2)
        engine = FakeEngine(name=config.model.name, token_delay=0.02)
        def shutdown(timeout=None):
            print("SHUTDOWN " + json.dumps({"running": len(engine.running), "aborted": len(engine.aborted)}), flush=True)
        engine.shutdown = shutdown
        engine.is_alive = True
        engine.on_failure = lambda callback: None  # the server supervises it; this one never fails
        return engine

    class Launch:  # an engine process that is still loading
        def __init__(self, config):
            self.config = config
        def wait(self, progress):
            return start_engine(self.config, progress)
        def restart(self):
            return start_engine(self.config, lambda done, total: None)
        def cancel(self):
            pass

    launch = types.ModuleType("firebox.engine.launch")
    launch.start_engine = start_engine
    sys.modules["firebox.engine.launch"] = launch
    process = types.ModuleType("firebox.engine.process")  # --engine-process, the default
    process.launch_process_engine = lambda config, start_method="spawn": Launch(config)
    sys.modules["firebox.engine.process"] = process
    from firebox.cli import main
    sys.argv = ["firebox", "serve"] + sys.argv[1:]
    main()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_health(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"the server did not come up: {proc.communicate(timeout=5)}")


def _stream_until_cut(url: str, seen: list[str]) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 200,
        "ignore_eos": True,
    }
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                seen.append(line)
    except httpx.HTTPError:
        pass  # the server cut the stream at shutdown


def test_serve_runs_and_shuts_down_gracefully(tmp_path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIREBOX_API_KEY": ""}
    args = [
        "--data-dir",
        str(tmp_path),
        "--port",
        str(port),
        "--model",
        "dummy:/cfg/Tiny/config.json=tiny",
        "--shutdown-grace",
        "0.3",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_LAUNCH, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_health(url, proc)
        models = httpx.get(f"{url}/inference/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["accounts/fireworks/models/tiny"]
        seen: list[str] = []
        streamer = threading.Thread(target=_stream_until_cut, args=(url, seen))
        streamer.start()
        assert wait_until(lambda: len(seen) > 5, timeout=10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        streamer.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (
        f"serving on http://127.0.0.1:{port}" in err and "accounts/fireworks/models/tiny" in err and "auth: OFF" in err
    )
    shutdown = json.loads(out.split("SHUTDOWN ", 1)[1].splitlines()[0])
    assert shutdown == {"running": 0, "aborted": 1}  # the unfinished stream was aborted before the engine stopped
    assert "data: [DONE]" not in seen



def test_a_second_server_on_the_same_data_dir_stops_with_a_clear_error(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIREBOX_API_KEY": ""}

    def serve(port: int) -> subprocess.Popen:
        args = ["--data-dir", str(tmp_path), "--port", str(port), "--model", "dummy:/cfg/Tiny/config.json=tiny"]
        return subprocess.Popen([sys.executable, "-c", FAKE_LAUNCH, *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    first_port = _free_port()
    first = serve(first_port)
    try:
        _wait_for_health(f"http://127.0.0.1:{first_port}", first)
        second = serve(_free_port())
        _, err = second.communicate(timeout=60)
    finally:
        first.kill()
        first.communicate(timeout=20)
    assert second.returncode == 1
    assert f"the data directory {tmp_path} is in use by another firebox server (pid {first.pid})" in err
    assert "Traceback" not in err
