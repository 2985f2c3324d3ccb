"""The deployments control plane through the `fireworks-ai` SDK, inference on deployments
through the `openai` SDK (both ways of addressing them), and the catalog's Model shapes."""

from __future__ import annotations

import fireworks
import httpx
import openai
import pytest

from tests.conftest import wait_until
from tests.deployments.conftest import ADMIN_KEY, DeploymentServer

SMOL = "accounts/fireworks/models/smollm2-135m-instruct"
FAST_POLICY = {"scale_up_window": "0.5s", "scale_down_window": "30s", "scale_to_zero_window": "1h"}


def _ready(fw, deployment_id: str, count: int = 1):
    def check() -> bool:
        d = fw.deployments.get(deployment_id)
        return d.state == "READY" and d.replica_stats.ready_replica_count == count
    assert wait_until(check, timeout=30), fw.deployments.get(deployment_id)
    return fw.deployments.get(deployment_id)


def test_sdk_create_get_list_update_scale_delete_undelete(server: DeploymentServer) -> None:
    fw = server.fireworks()
    created = fw.deployments.create(base_model="smollm2-135m-instruct", deployment_id="d1", display_name="First",
                                    min_replica_count=0, max_replica_count=2, autoscaling_policy=FAST_POLICY)
    assert (created.name, created.base_model, created.display_name) == ("accounts/fireworks/deployments/d1", SMOL, "First")
    assert created.state == "CREATING" and created.desired_replica_count == 1
    assert created.autoscaling_policy.scale_up_window == "0.5s" and created.autoscaling_policy.scale_to_zero_window == "3600s"
    ready = _ready(fw, "d1")
    assert ready.replica_count == 1 and ready.status.code == "OK" and ready.create_time is not None

    updated = fw.deployments.update("d1", base_model=SMOL, description="for tests", max_replica_count=3)
    assert (updated.description, updated.max_replica_count, updated.display_name) == ("for tests", 3, "First")
    fw.deployments.scale("d1", replica_count=2)
    assert _ready(fw, "d1", count=2).desired_replica_count == 2
    assert [d.name for d in fw.deployments.list()] == ["accounts/fireworks/deployments/d1"]

    fw.deployments.delete("d1")
    assert fw.deployments.get("d1").state == "DELETED" and fw.deployments.get("d1").delete_time is not None
    assert list(fw.deployments.list()) == [] and len(list(fw.deployments.list(show_deleted=True))) == 1
    assert server.live("accounts/fireworks/deployments/d1") is None  # its replicas are gone
    assert fw.deployments.undelete("d1", body={}).state == "CREATING"
    assert _ready(fw, "d1").description == "for tests"

    fw.deployments.delete("d1", hard=True)
    with pytest.raises(fireworks.NotFoundError):
        fw.deployments.get("d1")


def test_inference_addressed_by_deployment_name_and_model_hash_deployment(server: DeploymentServer) -> None:
    fw, client = server.fireworks(), server.openai()
    fw.deployments.create(base_model=SMOL, deployment_id="chat", autoscaling_policy=FAST_POLICY)
    _ready(fw, "chat")
    host = server.live("accounts/fireworks/deployments/chat").replicas[0].host
    for model in ("accounts/fireworks/deployments/chat", f"{SMOL}#accounts/fireworks/deployments/chat",
                  "smollm2-135m-instruct#chat"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
        assert raw.parse().model == model and raw.parse().usage.completion_tokens == 4
        assert raw.headers["fireworks-deployment"] == "accounts/fireworks/deployments/chat"
        assert raw.headers["fireworks-backend-host"] == host
        assert raw.headers["fireworks-num-concurrent-requests"] == "1"
        assert "fireworks-deployment-cold-start-duration" not in raw.headers  # a replica was ready
    stream = client.completions.create(model="accounts/fireworks/deployments/chat", prompt="Once", max_tokens=5,
                                       stream=True)
    assert sum(len(c.choices[0].text) > 0 for c in stream if c.choices) >= 1
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="accounts/fireworks/deployments/nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.NotFoundError):  # the deployment serves another model
        client.completions.create(model="accounts/acme/models/tiny#accounts/fireworks/deployments/chat",
                                  prompt="x", max_tokens=1)
    with pytest.raises(openai.NotFoundError):  # deployment-only model, no deployment of it
        client.completions.create(model="accounts/acme/models/tiny", prompt="x", max_tokens=1)
    # a bare model name that no shared pool serves goes to the model's deployment
    bare = client.completions.create(model="smollm2-135m-instruct", prompt="Once", max_tokens=2)
    assert bare.model == "smollm2-135m-instruct" and bare.usage.completion_tokens == 2


def test_a_key_sees_and_uses_only_its_accounts_deployments(server: DeploymentServer) -> None:
    acme_key, rival_key = server.account_key("acme"), server.account_key("rival")
    acme, rival = server.fireworks(acme_key, "acme"), server.fireworks(rival_key, "acme")
    created = acme.deployments.create(base_model="accounts/acme/models/tiny", deployment_id="mine",
                                      autoscaling_policy=FAST_POLICY)
    assert created.name == "accounts/acme/deployments/mine"
    for call in (lambda: rival.deployments.list(), lambda: rival.deployments.get("mine"),
                 lambda: rival.deployments.scale("mine", replica_count=0), lambda: rival.deployments.delete("mine")):
        with pytest.raises(fireworks.PermissionDeniedError):
            call()
    with pytest.raises(fireworks.NotFoundError):  # acme's private model is not rival's to deploy
        server.fireworks(rival_key, "rival").deployments.create(base_model="accounts/acme/models/tiny")
    _ready(acme, "mine")
    with pytest.raises(openai.NotFoundError):
        server.openai(rival_key).completions.create(model="accounts/acme/deployments/mine", prompt="x", max_tokens=1)
    answer = server.openai(acme_key).completions.create(model="accounts/acme/deployments/mine", prompt="x",
                                                        max_tokens=1)
    assert answer.usage.completion_tokens == 1
    assert [d.name for d in server.fireworks(ADMIN_KEY, "acme").deployments.list()] == [created.name]


def test_invalid_requests_are_refused(server: DeploymentServer) -> None:
    url, headers = f"{server.url}/v1/accounts/fireworks/deployments", {"Authorization": f"Bearer {ADMIN_KEY}"}

    def create(body: dict, **params) -> httpx.Response:
        return httpx.post(url, json=body, params=params, headers=headers)

    assert create({}).status_code == 400  # baseModel is required
    assert create({"baseModel": "accounts/fireworks/models/unknown"}).status_code == 404
    assert create({"baseModel": SMOL, "minReplicaCount": 3, "maxReplicaCount": 2}).status_code == 400
    assert create({"baseModel": SMOL, "autoscalingPolicy": {"scaleUpWindow": "soon"}}).status_code == 400
    bad_target = create({"baseModel": SMOL, "autoscalingPolicy": {"loadTargets": {"tokens_per_fortnight": 1}}})
    assert bad_target.status_code == 400 and "tokens_per_fortnight" in bad_target.json()["error"]["message"]
    assert create({"baseModel": SMOL, "maxReplicaCount": 0}, deploymentId="off").status_code == 200
    assert create({"baseModel": SMOL, "maxReplicaCount": 0}, deploymentId="off").status_code == 409
    scale = httpx.patch(f"{url}/off:scale", json={"replicaCount": 1}, headers=headers)
    assert scale.status_code == 400 and set(scale.json()["error"]) == {"message", "type", "param", "code"}
    switched_off = server.openai().completions.create
    with pytest.raises(openai.InternalServerError) as refused:  # maxReplicaCount 0: nothing may start
        switched_off(model="accounts/fireworks/deployments/off", prompt="x", max_tokens=1)
    assert refused.value.status_code == 503


def test_catalog_models_in_the_fireworks_model_shape(server: DeploymentServer) -> None:
    fw = server.fireworks()
    smol = fw.models.get("smollm2-135m-instruct")
    assert (smol.name, smol.kind, smol.state, smol.context_length) == (SMOL, "HF_BASE_MODEL", "READY", 1024)
    assert smol.public and not smol.supports_serverless and smol.display_name == "SmolLM2 135M Instruct"
    assert "<|im_start|>" in smol.conversation_config.template and smol.deployed_model_refs == []
    fw.deployments.create(base_model=SMOL, deployment_id="ref", max_replica_count=0)
    refs = fw.models.get("smollm2-135m-instruct").deployed_model_refs
    assert [(r.deployment, r.default) for r in refs] == [("accounts/fireworks/deployments/ref", True)]
    assert [m.name for m in fw.models.list()] == [SMOL]

    tiny_for_acme = server.fireworks(server.account_key("acme"), "acme").models.get("tiny")
    assert tiny_for_acme.default_sampling_params == {"temperature": 0.5} and not tiny_for_acme.public
    assert tiny_for_acme.context_length == 512
    outsider = server.fireworks(server.account_key("rival"), "acme")
    assert list(outsider.models.list()) == []
    with pytest.raises(fireworks.NotFoundError):
        outsider.models.get("tiny")


def test_a_new_context_length_replaces_the_replicas(server: DeploymentServer) -> None:
    fw, client = server.fireworks(), server.openai()
    fw.deployments.create(base_model=SMOL, deployment_id="ctx", autoscaling_policy=FAST_POLICY)
    _ready(fw, "ctx")
    live = server.live("accounts/fireworks/deployments/ctx")
    before = live.replicas[0]
    long_prompt = "word " * 300
    assert client.completions.create(model="accounts/fireworks/deployments/ctx", prompt=long_prompt,
                                     max_tokens=1).usage.prompt_tokens > 256
    assert fw.deployments.update("ctx", base_model=SMOL, max_context_length=256).max_context_length == 256
    assert wait_until(lambda: live.counts().ready == 1 and live.replicas[0] is not before, timeout=30)
    assert live.state == "READY" and not before.engine.is_alive  # the old replica was stopped
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="accounts/fireworks/deployments/ctx", prompt=long_prompt, max_tokens=1)


def test_affinity_keys_and_shared_prefixes_stick_to_one_replica(server: DeploymentServer) -> None:
    fw, client = server.fireworks(), server.openai()
    fw.deployments.create(base_model=SMOL, deployment_id="pair", min_replica_count=2, max_replica_count=2)
    _ready(fw, "pair", count=2)
    model = "accounts/fireworks/deployments/pair"

    def host(prompt: str, **kwargs) -> str:
        raw = client.completions.with_raw_response.create(model=model, prompt=prompt, max_tokens=1, **kwargs)
        return raw.headers["fireworks-backend-host"]

    shared = "You are a terse assistant. Answer in one word only, please, and nothing else at all. " * 2
    assert len({host(shared + question) for question in ("Sky?", "Grass?", "Sun?", "Sea?")}) == 1
    for kwargs in ({"user": "alice"}, {"extra_headers": {"x-session-affinity": "s-1"}},
                   {"extra_body": {"prompt_cache_key": "k-1"}}):  # fmt: skip
        assert len({host(f"Question {i}?", **kwargs) for i in range(4)}) == 1, kwargs
    assert len({host(f"{i} distinct prompts spread") for i in range(12)}) == 2  # no key: least loaded / hash
