"""Short and bare model names resolve in the caller's account first (issue 19, item 12a): a bare
model name that no shared pool serves goes to the caller's own deployment, not to an older one of
another account (which it may not use, and which answered 404)."""

from __future__ import annotations

from tests.conftest import wait_until
from tests.deployments.conftest import DeploymentServer

SMOL_ID = "smollm2-135m-instruct"
SMOL = f"accounts/fireworks/models/{SMOL_ID}"


def test_a_bare_model_name_goes_to_the_callers_own_deployment(server: DeploymentServer) -> None:
    rival_key, acme_key = server.account_key("rival"), server.account_key("acme")
    server.fireworks(rival_key, "rival").deployments.create(base_model=SMOL, deployment_id="older")
    server.fireworks(acme_key, "acme").deployments.create(base_model=SMOL, deployment_id="mine")
    for name in ("accounts/rival/deployments/older", "accounts/acme/deployments/mine"):
        assert wait_until(lambda name=name: server.live(name).counts().ready == 1, timeout=30)

    def deployment_used(key: str, model: str) -> str:
        raw = server.openai(key).completions.with_raw_response.create(
            model=model, prompt="x", max_tokens=1, extra_body={"perf_metrics_in_response": True})
        return raw.parse().model_extra["perf_metrics"]["deployment"]

    for model in (SMOL_ID, SMOL, f"{SMOL_ID}#mine"):
        assert deployment_used(acme_key, model) == "accounts/acme/deployments/mine"
    assert deployment_used(rival_key, SMOL_ID) == "accounts/rival/deployments/older"
