"""A live server with the deployments control plane, wired as `firebox serve` wires it.

`deployment_server()` runs uvicorn on its own event loop in a thread, starts the
`DeploymentControl` on that loop before serving and closes it (stopping every replica) after.
Replicas are real engine processes; by default their engine core runs the fake executor of
`fake_replica.py` (no torch, sub-second starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ADMIN_KEY = "admin-key"
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
CATALOG = textwrap.dedent(
    """
    [[models]]
    id = "smollm2-135m-instruct"
    serverless = false
    max_model_len = 1024
    display_name = "SmolLM2 135M Instruct"

    [[models]]
    id = "tiny"
    account = "acme"
    source = "dummy:{tiny}"
    serverless = false
    max_model_len = 512
    default_sampling = {{ temperature = 0.5 }}
    """
)


@dataclass
class DeploymentServer:
    url: str
    loop: asyncio.AbstractEventLoop
    control: Any  # DeploymentControl
    platform: Any  # Platform

    def call(self, work: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def fireworks(self, key: str = ADMIN_KEY, account_id: str = "fireworks") -> Any:
        import fireworks

        return fireworks.Fireworks(api_key=key, base_url=self.url, account_id=account_id, max_retries=0)

    def openai(self, key: str = ADMIN_KEY, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/inference/v1", api_key=key, max_retries=0, **kwargs)

    def live(self, name: str) -> Any:
        return self.control.manager.get(name)

    def account_key(self, account_id: str) -> str:
        """A new key of an admin user of `account_id` (created with the account if need be)."""
        accounts, keys = self.platform.accounts, self.platform.keys
        accounts.ensure_account(account_id)
        accounts.ensure_user(account_id, "root")
        return keys.create(account_id, "root").key


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    folder = tmp_path_factory.mktemp("tiny-llama")
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder


@pytest.fixture
def catalog_file(tmp_path: Path, tiny_model_dir: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG.format(tiny=tiny_model_dir / "config.json"))
    return path


def _server_config(data_dir: Path, catalog_file: Path, settings: Any) -> Any:
    from firebox.config import EngineOptions, ServerConfig

    defaults = EngineOptions(num_kv_blocks=256, max_num_seqs=16, device="cpu", num_threads=1)
    return ServerConfig(data_dir=data_dir, engines=(), catalog_path=catalog_file, engine_defaults=defaults,
                        deployments=settings)


def _app(config: Any, platform: Any, backend: Any, serverless: dict[str, Any]) -> tuple[Any, Any]:
    from firebox.api.app import create_app
    from firebox.api.routes.control_plane import control_plane_router
    from firebox.api.routes.metrics import metrics_router
    from firebox.cli_catalog import add_deployments
    from firebox.serving.registry import ModelRegistry

    registry = ModelRegistry()
    for name, engine in serverless.items():
        registry.add(name, engine)
    control, routers = add_deployments(config, registry, platform, backend=backend)
    routers.append(control_plane_router(platform.accounts, platform.keys, platform.authenticator))
    routers.append(metrics_router(platform.metrics))
    app = create_app(registry, platform.authenticator, platform.completion_callbacks(), config,
                     extra_routers=routers)
    return app, control


@contextlib.contextmanager
def deployment_server(data_dir: Path, catalog_file: Path, *, build: Any = None, settings: Any = None,
                      serverless: dict[str, Any] | None = None, backend: Any = None) -> Iterator[DeploymentServer]:
    """A live server over `catalog_file`, its platform database in `data_dir`; replicas are local
    processes unless `backend` says otherwise."""
    import uvicorn

    from firebox.config import DeploymentConfig
    from firebox.platform.services import Platform
    from firebox.serving.deployments.local_backend import LocalProcessBackend
    from tests.deployments.fake_replica import build_fake_core

    settings = settings or DeploymentConfig(cold_start_timeout_s=60, restart_backoff_s=0.2)
    config = _server_config(data_dir, catalog_file, settings)
    platform = Platform.open(data_dir, None, admin_keys=(ADMIN_KEY,))
    backend = backend or LocalProcessBackend(build=build or build_fake_core, stop_timeout_s=5)
    app, control = _app(config, platform, backend, serverless or {})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main() -> None:
        await control.start()
        started.set()
        try:
            await server.serve(sockets=[sock])
        finally:
            await control.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        if not started.wait(60):
            raise RuntimeError("the deployment server did not start")
        while not server.started:
            threading.Event().wait(0.01)
        yield DeploymentServer(f"http://127.0.0.1:{sock.getsockname()[1]}", loop, control, platform)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        platform.close()
        sock.close()


@pytest.fixture
def server(tmp_path: Path, catalog_file: Path) -> Iterator[DeploymentServer]:
    with deployment_server(tmp_path / "data", catalog_file) as live:
        yield live
