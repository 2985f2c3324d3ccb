"""`prediction` and `speculation` reach the engine as tokens to verify; refusals name the field."""

from __future__ import annotations

import openai
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"
ASK = [{"role": "user", "content": "Hello"}]


def _prediction_ids(server) -> tuple[int, ...]:
    [request] = server.engine.submitted
    return request.prediction_token_ids


@pytest.mark.parametrize(
    "prediction",
    [{"type": "content", "content": "Paris is nice"}, {"type": "content", "content": [{"type": "text", "text": "Paris is nice"}]}],
)
def test_a_prediction_is_tokenized_for_the_engine(client, server, prediction) -> None:
    client.chat.completions.create(model=MODEL, messages=ASK, prediction=prediction)
    assert _prediction_ids(server) == tuple(server.engine.tokenizer.encode("Paris is nice"))


def test_speculation_text_or_token_ids(client, server) -> None:
    client.completions.create(model=MODEL, prompt="Hi", extra_body={"speculation": "Paris"})
    assert _prediction_ids(server) == tuple(server.engine.tokenizer.encode("Paris"))
    server.engine.reset()
    client.completions.create(model=MODEL, prompt="Hi", extra_body={"speculation": [5, 6, 7]})
    assert _prediction_ids(server) == (5, 6, 7)


def test_without_a_prediction_nothing_is_drafted_or_reported(client, server) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK)
    assert _prediction_ids(server) == ()
    details = response.usage.completion_tokens_details
    assert details.accepted_prediction_tokens == 0 and details.rejected_prediction_tokens == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prediction": {"type": "content", "content": "a"}, "speculation": "a"}, "speculation"),
        ({"prediction": {"type": "file", "content": "a"}}, "prediction"),
        ({"speculation": [10**9]}, "speculation"),
        ({"speculation": [-1]}, "speculation[0]"),
    ],
)
def test_bad_predictions_are_a_400_naming_the_field(client, server, extra, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    assert caught.value.body["param"].startswith(param.split("[")[0])
    assert not server.engine.submitted
