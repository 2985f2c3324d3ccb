"""`firebox serve --model hf:...` as users run it (a subprocess): the first start downloads from the
fake hub, the second starts from the cache with the hub gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import running_server
from tests.loader.fake_hub import FakeHub
from tests.loader.hub_repos import GGUF, LLAMA, Weights, serving_fake_hub

ARGS = ("-m", f"hf:{LLAMA}", "-m", f"hf:{GGUF}:Q8_0=tiny-gguf", "--quantization", "none", "--num-threads", "1",
        "--kv-cache-mib", "16", "--max-model-len", "64", "--max-num-seqs", "4")  # fmt: skip
MODELS = ("accounts/fireworks/models/tiny-llama", "accounts/fireworks/models/tiny-gguf")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, Weights]]:
    with serving_fake_hub(tmp_path, monkeypatch) as served:
        yield served


def _complete(url: str, model: str) -> dict:
    body = {"model": model, "prompt": "hello world", "max_tokens": 3, "temperature": 0}
    response = httpx.post(f"{url}/inference/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_serve_by_name_then_from_the_cache_without_the_hub(fake: tuple[FakeHub, Weights], tmp_path: Path) -> None:
    fake_hub, _ = fake
    with running_server(tmp_path / "first", *ARGS) as server:
        first = [_complete(server.url, model)["choices"][0]["text"] for model in MODELS]
    assert {"tiny-llama-Q8_0.gguf", "model-00002-of-00002.safetensors"} <= set(fake_hub.downloads())
    # resolved once, before the engines start: they and the API process open the pinned sources from the cache
    assert len([path for _, path, _ in fake_hub.requests if path.startswith("/api/models/")]) == 2
    fake_hub.stop()
    with running_server(tmp_path / "second", *ARGS) as server:
        assert [_complete(server.url, model)["choices"][0]["text"] for model in MODELS] == first
