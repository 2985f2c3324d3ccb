"""Hardening (issue 19, item 10): the Host allow-list against DNS rebinding, and the flags of the
limits (`--allowed-hosts`, `--max-request-bytes`)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from firebox.cli import app
from tests.conftest import serve_in_thread


def _get(url: str, host: str) -> httpx.Response:
    return httpx.get(f"{url}/health", headers={"host": host})


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST"])
def test_the_localhost_names_are_answered(server, host: str) -> None:
    assert _get(server.url, host).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "10.0.0.1"])
def test_other_host_names_are_refused(server, host: str) -> None:
    response = _get(server.url, host)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "HOST_NOT_ALLOWED" and "--allowed-hosts" in response.text
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers={"host": host},
                      json={"model": "accounts/fireworks/models/fake-chatml", "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
    assert chat.status_code == 400 and not server.engine.submitted


@pytest.fixture(scope="module")
def listed_hosts_server() -> Iterator[str]:
    from firebox.api.app import create_app
    from firebox.config import ServerConfig
    from firebox.serving.registry import ModelRegistry

    config = ServerConfig(host="10.1.2.3", allowed_hosts=("api.example.com",))
    with serve_in_thread(create_app(ModelRegistry(), config=config)) as url:
        yield url


@pytest.mark.parametrize(("host", "status"), [("api.example.com", 200), ("api.example.com:443", 200),
                                              ("10.1.2.3:8000", 200), ("localhost", 200), ("evil.example", 400)])  # fmt: skip
def test_listed_names_and_the_bound_host_are_answered(listed_hosts_server: str, host: str, status: int) -> None:
    assert _get(listed_hosts_server, host).status_code == status


def test_a_star_answers_any_host() -> None:
    from firebox.api.app import create_app
    from firebox.config import ServerConfig
    from firebox.serving.registry import ModelRegistry

    with serve_in_thread(create_app(ModelRegistry(), config=ServerConfig(allowed_hosts=("*",)))) as url:
        assert _get(url, "anything.example").status_code == 200


def test_the_flags_reach_the_server_config(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    args = ["serve", "--allowed-hosts", "a.example,b.example", "--allowed-hosts", "c.example",
            "--max-request-bytes", "1000"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"FIREBOX_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert seen[0].allowed_hosts == ("a.example", "b.example", "c.example") and seen[0].max_request_bytes == 1000
    assert CliRunner().invoke(app, ["serve", "--max-request-bytes", "0"]).exit_code == 2


def test_max_replicas_and_usage_fsync_reach_the_server_config(monkeypatch) -> None:
    from firebox.config import default_max_replicas

    seen = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    args = ["serve", "--max-replicas", "3", "--usage-fsync-ms", "-1"]
    assert CliRunner().invoke(app, args, env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert CliRunner().invoke(app, ["serve"], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert (seen[0].deployments.max_replicas, seen[0].usage_fsync_s) == (3, None)
    assert (seen[1].deployments.max_replicas, seen[1].usage_fsync_s) == (default_max_replicas(), 0.05)
    assert CliRunner().invoke(app, ["serve", "--max-replicas", "0"]).exit_code == 2


def test_responses_ttl_reaches_the_server_config(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    for ttl in ("12h", "90m", "3600", "0"):
        assert CliRunner().invoke(app, ["serve", "--responses-ttl", ttl], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert CliRunner().invoke(app, ["serve"], env={"FIREBOX_API_KEY": ""}).exit_code == 0
    assert [config.responses_ttl_s for config in seen] == [43200.0, 5400.0, 3600.0, None, 30 * 86400.0]
    assert CliRunner().invoke(app, ["serve", "--responses-ttl", "a week"]).exit_code == 2
