"""Replicas that die and servers that restart: a killed replica's requests end with 503 (never a
hang) and a new replica takes its place; deployments come back after a restart at their desired
replica count, and the catalog's deployments are created once."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from pathlib import Path

import openai
import pytest

from tests.conftest import wait_until
from tests.deployments.conftest import deployment_server

SMOL = "accounts/fireworks/models/smollm2-135m-instruct"


def test_a_killed_replica_fails_its_requests_with_503_and_is_replaced(server) -> None:
    name = "accounts/fireworks/deployments/fragile"
    server.fireworks().deployments.create(base_model=SMOL, deployment_id="fragile", min_replica_count=1,
                                          max_replica_count=1)
    assert wait_until(lambda: server.live(name).counts().ready == 1, timeout=30)
    victim = server.live(name).replicas[0]
    client = server.openai()
    failures: list[int] = []

    def non_streamed() -> None:
        try:
            client.completions.create(model=name, prompt="a long one", max_tokens=900, extra_body={"ignore_eos": True})
        except openai.APIStatusError as exc:
            failures.append(exc.status_code)

    waiting = threading.Thread(target=non_streamed)
    waiting.start()
    stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], stream=True,
                                            max_tokens=900, extra_body={"ignore_eos": True})
    next(iter(stream))
    assert wait_until(lambda: victim.num_outstanding == 2)
    os.kill(victim.engine.transport.pid, signal.SIGKILL)

    waiting.join(timeout=10)
    assert failures == [503]
    with pytest.raises(openai.APIError, match="stopped") as ended:  # the stream ends with an error event
        for _ in stream:
            pass
    assert str(victim.engine.transport.pid) not in str(ended.value)  # the log names the process, not the client
    assert wait_until(lambda: server.live(name).counts().ready == 1 and server.live(name).replicas[0] is not victim,
                      timeout=30)
    answer = client.completions.with_raw_response.create(model=name, prompt="again", max_tokens=2)
    assert answer.headers["fireworks-backend-host"] != victim.host and answer.parse().usage.completion_tokens == 2


CATALOG_DEPLOYMENT = textwrap.dedent(
    """
    [[models.deployments]]
    id = "from-catalog"
    max_replica_count = 1
    autoscaling_policy = { scale_to_zero_window = "1h" }
    """
)


def test_deployments_survive_a_restart(tmp_path: Path, catalog_file: Path) -> None:
    catalog_file.write_text(catalog_file.read_text() + CATALOG_DEPLOYMENT)  # a deployment of the last model
    data_dir = tmp_path / "data"
    with deployment_server(data_dir, catalog_file) as first:
        fw = first.fireworks()
        assert fw.deployments.get("from-catalog", account_id="acme").base_model == "accounts/acme/models/tiny"
        fw.deployments.delete("from-catalog", account_id="acme")
        fw.deployments.create(base_model=SMOL, deployment_id="keep", display_name="Keep", max_replica_count=2,
                              autoscaling_policy={"scaleDownWindow": "1h"})
        fw.deployments.scale("keep", replica_count=2)
        assert wait_until(lambda: first.live("accounts/fireworks/deployments/keep").counts().ready == 2, timeout=30)

    with deployment_server(data_dir, catalog_file) as second:
        fw = second.fireworks()
        keep = "accounts/fireworks/deployments/keep"
        assert wait_until(lambda: second.live(keep).counts().ready == 2, timeout=30)  # back at its desired count
        restored = fw.deployments.get("keep")
        assert (restored.display_name, restored.desired_replica_count, restored.state) == ("Keep", 2, "READY")
        assert restored.autoscaling_policy.scale_down_window == "3600s"
        assert fw.deployments.get("from-catalog", account_id="acme").state == "DELETED"  # not created again
        answer = second.openai().completions.create(model=keep, prompt="still here", max_tokens=2)
        assert answer.usage.completion_tokens == 2
