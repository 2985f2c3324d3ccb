"""Stored responses in the platform database (SQLite), through the real server and two accounts'
API keys checked by the platform's `DatabaseAuthenticator`: a three-turn conversation, retrieve,
input items, list, delete, account isolation, each turn stored once, and the caps of a chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from firebox.api.app import create_app
from firebox.platform.schema import ResponseRow
from firebox.platform.services import Platform
from firebox.serving.responses import chain as response_chain
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread, wait_until
from tests.fakes import FakeEngine

MODEL = "accounts/fireworks/models/fake-chatml"


@dataclass
class PlatformServer:
    url: str
    engine: Any  # tests.fakes.FakeEngine
    platform: Any  # firebox.platform.services.Platform
    keys: dict[str, str]  # account -> API key
    records: list[Any] = field(default_factory=list)

    def openai(self, account: str = "acme") -> Any:
        return openai.OpenAI(base_url=f"{self.url}/inference/v1", api_key=self.keys[account], max_retries=0)

    def headers(self, account: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[account]}"}


def _keys(platform: Any) -> dict[str, str]:
    keys = {}
    for account in ("acme", "globex"):
        platform.accounts.create_account(account)
        platform.accounts.create_user(account, role="user", user_id="alice")
        keys[account] = platform.keys.create(account, "alice").key
    return keys


@pytest.fixture(scope="module")
def platform_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformServer]:
    platform = Platform.open(tmp_path_factory.mktemp("responses-data"))
    engine = FakeEngine()
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    live = PlatformServer("", engine, platform, _keys(platform))
    callbacks = [live.records.append, *platform.completion_callbacks()]
    app = create_app(registry, platform.authenticator, callbacks, response_store=platform.responses)
    try:
        with serve_in_thread(app) as url:
            live.url = url
            yield live
    finally:
        platform.close()


@pytest.fixture
def stored(platform_server: PlatformServer) -> Iterator[PlatformServer]:
    """The platform server with its engine and records reset for this test."""
    platform_server.engine.reset()
    platform_server.records.clear()
    yield platform_server
    assert wait_until(lambda: not platform_server.engine.running), "a request was left running in the engine"


FIRST = "My name is Ada."


def _prompt(server, index: int = -1) -> str:
    return server.engine.tokenizer.decode(server.engine.submitted[index].prompt_token_ids, skip_special_tokens=False)


def _get(server, path: str, account: str = "acme", **params: object) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10, headers=server.headers(account)) as http:
        return http.get(path, params=params)


def test_three_turn_conversation_answers_about_the_first_turn(stored) -> None:
    """The fake model echoes the start of its prompt: by the third turn it can only "remember" the
    first turn if the stored conversation was sent again."""
    client, echo = stored.openai(), {"max_output_tokens": 40, "extra_body": {"ignore_eos": True}}
    stored.engine.reply = None
    first = client.responses.create(model=MODEL, input=FIRST, instructions="Be brief.", **echo)
    second = client.responses.create(
        model=MODEL, input="I also like tea.", previous_response_id=first.id, instructions="Be kind.", **echo
    )
    third = client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=second.id, instructions="Echo.", **echo
    )
    prompt = _prompt(stored)
    assert prompt.index(FIRST) < prompt.index(first.output_text) < prompt.index("I also like tea.")
    assert prompt.index(second.output_text) < prompt.index("What is my name?")
    assert prompt.startswith("<|im_start|>system\nEcho.<|im_end|>")  # earlier instructions are not carried over
    assert "<|im_start|>system\nBe" not in prompt
    assert FIRST in third.output_text and third.previous_response_id == second.id
    items = client.responses.input_items.list(third.id, order="asc")
    texts = [item.content[0].text for item in items.data]
    assert texts == [FIRST, first.output_text, "I also like tea.", second.output_text, "What is my name?"]
    assert [item.role for item in items.data] == ["user", "assistant", "user", "assistant", "user"]
    assert items.data[1].id == first.output[0].id


def test_a_function_call_and_its_output_survive_the_database(stored, monkeypatch) -> None:
    monkeypatch.setattr(stored.engine, "max_model_len", 4096)  # room for the default tool prompt
    client, weather = stored.openai(), {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    stored.engine.reply = '<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]</tool_call>'
    first = client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[weather])
    (call,) = client.responses.retrieve(first.id).output
    assert call.type == "function_call" and call.call_id == first.output[0].call_id
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "snow"}
    stored.engine.reply = "Snow."
    second = client.responses.create(model=MODEL, input=[answer], previous_response_id=first.id, tools=[weather])
    assert second.output_text == "Snow." and '{"city": "Oslo"}' in _prompt(stored)
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]


def test_retrieve_returns_what_create_returned(stored) -> None:
    client = stored.openai()
    created = client.responses.create(model=MODEL, input="Hello", metadata={"run": "7"}, max_output_tokens=5)
    fetched = client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    assert fetched.status == "incomplete" and fetched.metadata == {"run": "7"}
    assert stored.records[0].endpoint == "responses" and stored.records[0].metadata == {"run": "7"}


def test_input_items_pages_newest_first(stored) -> None:
    client = stored.openai()
    items = [{"role": "user", "content": f"Question {i}"} for i in range(5)]
    response = client.responses.create(model=MODEL, input=items)
    first_page = client.responses.input_items.list(response.id, limit=2)
    assert [i.content[0].text for i in first_page.data] == ["Question 4", "Question 3"] and first_page.has_more
    assert first_page.first_id == first_page.data[0].id and first_page.last_id == first_page.data[1].id
    every = [i.content[0].text for i in client.responses.input_items.list(response.id, limit=2)]  # auto-paging
    assert every == [f"Question {i}" for i in reversed(range(5))]
    assert all(i.type == "message" and i.status == "completed" and i.id.startswith("msg_") for i in first_page.data)


def test_list_responses(stored) -> None:
    client = stored.openai("globex")
    ids = [client.responses.create(model=MODEL, input=f"Hi {i}", max_output_tokens=1).id for i in range(3)]
    page = _get(stored, "/v1/responses", "globex", limit=2).json()
    assert page["object"] == "list" and [r["id"] for r in page["data"]] == ids[:0:-1] and page["has_more"]
    assert (page["first_id"], page["last_id"]) == (ids[2], ids[1])
    rest = _get(stored, "/inference/v1/responses", "globex", limit=2, after=page["last_id"]).json()
    assert [r["id"] for r in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert _get(stored, "/v1/responses", "globex", after="resp_unknown").status_code == 400
    assert _get(stored, "/v1/responses", "globex", limit=101).status_code == 400


def test_delete_then_continuation_and_retrieve_fail(stored) -> None:
    client = stored.openai()
    response = client.responses.create(model=MODEL, input="Hello")
    with httpx.Client(base_url=stored.url, headers=stored.headers()) as http:
        deleted = http.delete(f"/v1/responses/{response.id}")
    assert deleted.json() == {"id": response.id, "object": "response", "deleted": True,
                              "message": f"Response {response.id} deleted."}  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Again", previous_response_id=response.id)
    assert info.value.body["code"] == "previous_response_not_found"
    assert stored.engine.submitted[-1].request_id != info.value.response.headers.get("x-request-id")


def test_another_account_sees_nothing(stored) -> None:
    acme, globex = stored.openai("acme"), stored.openai("globex")
    response = acme.responses.create(model=MODEL, input="A secret plan.")
    with pytest.raises(openai.NotFoundError):
        globex.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.input_items.list(response.id)
    with pytest.raises(openai.NotFoundError):
        globex.responses.delete(response.id)
    with pytest.raises(openai.BadRequestError):
        globex.responses.create(model=MODEL, input="Go on", previous_response_id=response.id)
    assert response.id not in [r["id"] for r in _get(stored, "/v1/responses", "globex", limit=100).json()["data"]]
    assert acme.responses.retrieve(response.id).output_text == stored.engine.reply  # still there for its owner


def test_stored_routes_need_a_key(stored) -> None:
    with httpx.Client(base_url=stored.url) as http:
        assert http.get("/v1/responses").status_code == 401
        assert http.get("/v1/responses/resp_x").status_code == 401
        assert http.post("/v1/responses", json={"model": MODEL, "input": "Hi"}).status_code == 401


def _conversation(client, *inputs: str) -> list:
    responses, previous = [], None
    for text in inputs:
        responses.append(client.responses.create(model=MODEL, input=text, previous_response_id=previous))
        previous = responses[-1].id
    return responses


def test_each_turn_is_stored_once_not_copied_into_every_later_row(stored) -> None:
    first, second, third = _conversation(stored.openai(), "One.", "Two.", "Three.")
    with stored.platform.database.session() as session:
        rows = {row.response_id: row.input_items for row in session.scalars(select(ResponseRow))}
    assert [[item["content"][0]["text"] for item in rows[r.id]] for r in (first, second, third)] == [
        ["One."], ["Two."], ["Three."]
    ]
    items = stored.openai().responses.input_items.list(third.id, order="asc").data  # the chain, walked
    assert [item.content[0].text for item in items] == [
        "One.", first.output_text, "Two.", second.output_text, "Three."
    ]


def test_a_conversation_over_its_turn_or_byte_cap_is_a_400(stored, monkeypatch) -> None:
    client = stored.openai()
    monkeypatch.setattr(response_chain, "MAX_CONVERSATION_TURNS", 3)
    *_, third = _conversation(client, "One.", "Two.", "Three.")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Four.", previous_response_id=third.id)
    assert info.value.body["code"] == "conversation_too_long" and "3 responses" in info.value.body["message"]
    monkeypatch.setattr(response_chain, "MAX_CONVERSATION_TURNS", 256)
    monkeypatch.setattr(response_chain, "MAX_CONVERSATION_BYTES", 2_000)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x" * 2_000, previous_response_id=third.id)
    assert info.value.body["code"] == "conversation_too_long" and "2000" in info.value.body["message"]
    assert client.responses.create(model=MODEL, input="Four.", previous_response_id=third.id).status


def test_deleting_an_earlier_turn_keeps_the_later_ones_whole(stored) -> None:
    client = stored.openai()
    first, second = _conversation(client, "One.", "Two.")
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.content[0].text for item in items] == ["One.", first.output_text, "Two."]
    client.responses.create(model=MODEL, input="Three.", previous_response_id=second.id)
    assert "One." in _prompt(stored)
