"""Completions: every prompt form, legacy logprobs, echo, scoring with max_tokens=0, streaming."""

from __future__ import annotations

import pytest

MODEL = "accounts/fireworks/models/fake-chatml"


def _ids(server, text: str) -> list[int]:
    return server.engine.tokenizer.encode(text)


def test_string_prompt_goes_to_the_model_without_a_template(client, server) -> None:
    response = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5)
    assert list(server.engine.submitted[0].prompt_token_ids) == _ids(server, "The capital of France is")
    assert response.object == "text_completion" and response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5 and response.choices[0].text


@pytest.mark.parametrize("form", ["list[str]", "list[int]", "list[list[int]]"])
def test_prompt_forms(client, server, form: str) -> None:
    texts = ["Paris", "Tell me a story"]
    prompt = {
        "list[str]": texts,
        "list[int]": _ids(server, texts[0]),
        "list[list[int]]": [_ids(server, t) for t in texts],
    }[form]
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, n=2)
    num_prompts = 1 if form == "list[int]" else 2
    assert [c.index for c in response.choices] == list(range(2 * num_prompts))
    assert [list(r.prompt_token_ids) for r in server.engine.submitted] == [
        _ids(server, t) for t in texts[:num_prompts] for _ in range(2)
    ]
    assert response.usage.prompt_tokens == sum(len(_ids(server, t)) for t in texts[:num_prompts])


def test_legacy_logprobs(client, server) -> None:
    response = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, logprobs=3)
    lp = response.choices[0].logprobs
    reply = server.engine.reply_ids(server.engine.submitted[0])[:4]
    assert lp.token_ids == reply and lp.tokens == [server.engine.tokenizer.token_text(t) for t in reply]
    assert all(v < 0 for v in lp.token_logprobs)
    assert all(len(top) == 3 and token in top for top, token in zip(lp.top_logprobs, lp.tokens))
    assert lp.text_offset[0] == 0 and "".join(lp.tokens) == response.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]


def test_echo_prepends_the_prompt_and_scores_it(client, server) -> None:
    prompt = "Tell me a story"
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, echo=True, logprobs=1)
    choice = response.choices[0]
    assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)
    num_prompt = len(_ids(server, prompt))
    assert len(choice.logprobs.tokens) == num_prompt + 3
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert all(v is not None for v in choice.logprobs.token_logprobs[1:])
    assert server.engine.submitted[0].sampling.prompt_logprobs == 1


def test_echo_with_max_tokens_zero_scores_a_prompt(client, server) -> None:
    prompt = "The capital of France is Paris."
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
    choice = response.choices[0]
    ids = _ids(server, prompt)
    assert choice.text == prompt and choice.finish_reason == "length" and response.usage.completion_tokens == 0
    scored = [v for v in choice.logprobs.token_logprobs if v is not None]
    assert len(choice.logprobs.token_logprobs) == len(ids) and len(scored) == len(ids) - 1  # P + C - 1 entries


def test_echo_scoring_as_the_fireworks_training_sampler_reads_it(client, server) -> None:
    """`logprobs: true` + raw_output: P + C rows, the first unconditional, ids echoed in raw_output."""
    prompt_ids = _ids(server, "Tell me a story")
    response = client.completions.create(
        model=MODEL, prompt=prompt_ids, max_tokens=2, echo=True, extra_body={"logprobs": True, "raw_output": True}
    )
    choice = response.choices[0].model_dump()
    raw = choice["raw_output"]
    assert (
        raw["completion_token_ids"][: len(prompt_ids)] == prompt_ids
        and len(raw["completion_token_ids"]) == len(prompt_ids) + 2
    )
    content = choice["logprobs"]["content"]
    assert len(content) == len(raw["completion_token_ids"]) and all(e["logprob"] is not None for e in content)
    assert raw["prompt_fragments"] == prompt_ids


def test_echo_last(client, server) -> None:
    prompt = "Tell me a story about a fox"
    ids = _ids(server, prompt)
    response = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=1, logprobs=0, extra_body={"echo_last": 2}
    )
    choice = response.choices[0]
    tail = server.engine.tokenizer.decode(ids[-2:])
    assert choice.text.startswith(tail) and len(choice.logprobs.tokens) == 3
    assert all(v is not None for v in choice.logprobs.token_logprobs)


def test_streamed_completions(client, server) -> None:
    chunks = list(
        client.completions.create(model=MODEL, prompt=["Paris", "Tell"], max_tokens=3, stream=True, echo=True)
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts[0].startswith("Paris") and texts[1].startswith("Tell")
    with_usage = [c for c in chunks if c.usage]
    assert len(with_usage) == 1 and with_usage[0].usage.completion_tokens == 6


def test_return_token_ids_in_completions(client, server) -> None:
    response = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=2, extra_body={"return_token_ids": True}
    )
    choice = response.choices[0].model_dump()
    assert choice["prompt_token_ids"] == _ids(server, "Hello")
    assert choice["token_ids"] == server.engine.reply_ids(server.engine.submitted[0])[:2]


def test_streamed_echo_logprobs_for_every_choice(client, server) -> None:
    chunks = list(
        client.completions.create(model=MODEL, prompt=["Paris", "Tell me"], n=2, max_tokens=1, echo=True, logprobs=1, stream=True)
    )
    openings = {}
    for chunk in chunks:
        for choice in chunk.choices:
            openings.setdefault(choice.index, choice)  # the first chunk of each choice holds the echo
    assert sorted(openings) == [0, 1, 2, 3]
    for index, choice in openings.items():
        prompt = "Paris" if index < 2 else "Tell me"
        assert choice.text == prompt and choice.logprobs.token_logprobs[0] is None
        assert len(choice.logprobs.tokens) == len(_ids(server, prompt))
        assert all(v is not None for v in choice.logprobs.token_logprobs[1:])
