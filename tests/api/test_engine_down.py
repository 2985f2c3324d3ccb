"""A model whose engine is down (killed, restarting): /health is a 503 naming it, requests get a
503 with Retry-After whose message names no process, and both recover once the engine is back."""

from __future__ import annotations

import threading

import httpx

from firebox.api.app import create_app
from firebox.engine.launch import run_on_thread
from firebox.engine.supervisor import RestartPolicy, SupervisedEngine
from firebox.engine.types import ModelInfo
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread, wait_until
from tests.engine.engine_fakes import build_tokenizer, make_core

NAME = "accounts/fireworks/models/restarting"


def test_health_and_requests_while_the_engine_is_down_and_after() -> None:
    tokenizer = build_tokenizer()
    gate = threading.Event()
    built = []

    def start():
        gate.wait(10)
        core, _ = make_core(tokenizer)
        built.append(run_on_thread(core, ModelInfo(NAME, "fake", 4096, tokenizer.vocab_size, (0,)), tokenizer))
        return built[-1]

    gate.set()
    engine = SupervisedEngine(start(), start, RestartPolicy(backoff_s=0.01, wait_s=0.3))
    registry = ModelRegistry()
    registry.add(NAME, engine)
    body = {"model": NAME, "prompt": "Hello", "max_tokens": 3}
    try:
        with serve_in_thread(create_app(registry)) as url, httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/health").json()["status"] == "ok"
            gate.clear()
            engine.engine.die("the engine process 4242 exited (exit code -9)", is_failure=True)

            health = http.get("/health")
            assert health.status_code == 503 and health.json()["unavailable"] == [NAME]
            refused = http.post("/v1/completions", json=body)
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
            message = refused.json()["error"]["message"]
            assert NAME in message and "4242" not in message and "Traceback" not in message

            gate.set()
            assert wait_until(lambda: http.get("/health").status_code == 200, timeout=10)
            assert http.post("/v1/completions", json=body).status_code == 200
    finally:
        gate.set()
        engine.shutdown()
        for started in built:
            started.shutdown()
