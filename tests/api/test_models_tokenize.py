"""`/models` (both name forms) and `/tokenize`, `/detokenize`."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"


def test_models_list(client) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {MODEL, "accounts/acme/models/other-model"}
    card = models[MODEL]
    assert card.object == "model" and card.owned_by == "fireworks" and card.created > 0
    assert card.model_dump()["context_length"] == 256
    assert models["accounts/acme/models/other-model"].owned_by == "acme"


@pytest.mark.parametrize("name", [MODEL, "fake-chatml"])
def test_model_by_full_or_short_name(client, name: str) -> None:
    card = client.models.retrieve(name)
    assert card.id == MODEL and card.model_dump()["context_length"] == 256


def test_unknown_model_card_is_a_404(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other-model")  # short names resolve in account fireworks only


def test_short_name_works_for_inference(client) -> None:
    response = client.chat.completions.create(
        model="fake-chatml", messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    assert response.model == MODEL


@pytest.mark.parametrize("prefix", ["", "/v1", "/inference/v1"])
def test_tokenize_and_detokenize_a_prompt(server, prefix: str) -> None:
    tok = server.engine.tokenizer
    with httpx.Client(base_url=server.url) as http:
        body = http.post(f"{prefix}/tokenize", json={"model": "fake-chatml", "prompt": "Hello, world!"}).json()
        assert body == {
            "tokens": tok.encode("Hello, world!"),
            "count": len(tok.encode("Hello, world!")),
            "max_model_len": 256,
        }
        back = http.post(f"{prefix}/detokenize", json={"model": MODEL, "tokens": body["tokens"]}).json()
    assert back == {"prompt": "Hello, world!"}


def test_tokenize_messages_matches_what_chat_sends_to_the_engine(server, client) -> None:
    messages = [{"role": "user", "content": "What's the capital of France?"}]
    client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    with httpx.Client(base_url=server.url) as http:
        body = http.post("/v1/tokenize", json={"model": MODEL, "messages": messages}).json()
        bare = http.post(
            "/v1/tokenize", json={"model": MODEL, "messages": messages, "add_generation_prompt": False}
        ).json()
    assert body["tokens"] == list(server.engine.submitted[0].prompt_token_ids)
    assert bare["count"] < body["count"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},
        {"model": MODEL, "prompt": "x", "messages": [{"role": "user", "content": "x"}]},
        {"model": MODEL, "prompt": 3},
    ],
)
def test_tokenize_refuses_bad_requests(server, body: dict) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/tokenize", json=body).status_code == 400


def test_detokenize_refuses_ids_outside_the_vocabulary(server) -> None:
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/v1/detokenize", json={"model": MODEL, "tokens": [10**6]})
        unknown = http.post("/v1/detokenize", json={"model": "nope", "tokens": [1]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tokens"
    assert unknown.status_code == 404


def test_a_developer_message_is_a_system_message(server) -> None:
    def tokens(role: str) -> list[int]:
        messages = [{"role": role, "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        with httpx.Client(base_url=server.url) as http:
            response = http.post("/v1/tokenize", json={"model": MODEL, "messages": messages})
        assert response.status_code == 200
        return response.json()["tokens"]

    assert tokens("developer") == tokens("system") != tokens("user")
