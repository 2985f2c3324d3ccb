"""Sampling parameters: request -> generation_config -> firebox defaults; logprob modes; seeds."""

from __future__ import annotations

import pytest

from firebox.engine.types import ModelInfo
from firebox.protocol.chat import ChatCompletionRequest
from firebox.serving.errors import InvalidRequestError
from firebox.serving.generation.sampling import (
    FIREBOX_DEFAULTS,
    LogprobMode,
    build_sampling,
    for_choice,
    logprob_mode,
    requested_max_tokens,
    sampling_options,
)


def _req(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def _info(**defaults: float) -> ModelInfo:
    return ModelInfo("m", "Fake", 128, 100, (2,), dict(defaults))


def test_firebox_defaults_when_neither_request_nor_model_says() -> None:
    params = build_sampling(_req(), _info(), LogprobMode(None), echo=False)
    assert {k: getattr(params, k) for k in FIREBOX_DEFAULTS} == FIREBOX_DEFAULTS
    assert (params.repetition_penalty, params.frequency_penalty, params.presence_penalty) == (1.0, 0.0, 0.0)


def test_generation_config_fills_what_the_request_leaves_out() -> None:
    info = _info(temperature=0.6, top_p=0.9, top_k=40, min_p=0.05, typical_p=0.95)
    params = build_sampling(_req(top_p=0.5), info, LogprobMode(None), echo=False)
    assert (params.temperature, params.top_p, params.top_k, params.min_p, params.typical_p) == (
        0.6,
        0.5,
        40,
        0.05,
        0.95,
    )
    assert isinstance(params.top_k, int)


def test_request_fields_reach_the_sampling_params() -> None:
    req = _req(
        temperature=0.0, repetition_penalty=1.3, frequency_penalty=0.5, presence_penalty=-0.5,
        logit_bias={"7": -100, "9": 5.5}, stop="END", seed=11, ignore_eos=True,
    )  # fmt: skip
    params = build_sampling(req, _info(), LogprobMode("new", 3), echo=True)
    assert params.is_greedy and params.repetition_penalty == 1.3
    assert (params.frequency_penalty, params.presence_penalty) == (0.5, -0.5)
    assert params.logit_bias == ((7, -100.0), (9, 5.5)) and params.stop == ("END",)
    assert params.seed == 11 and params.ignore_eos and params.logprobs == 3 and params.prompt_logprobs == 3


def test_logit_bias_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        build_sampling(_req(logit_bias={"100": 1}), _info(), LogprobMode(None), echo=False)
    assert info.value.param == "logit_bias"


def test_choice_seeds_are_consecutive() -> None:
    base = build_sampling(_req(seed=100), _info(), LogprobMode(None), echo=False)
    assert [for_choice(base, 5, i).seed for i in range(3)] == [100, 101, 102]
    assert for_choice(build_sampling(_req(), _info(), LogprobMode(None), echo=False), 5, 2).seed is None


@pytest.mark.parametrize(
    ("fields", "mode"),
    [
        ({}, LogprobMode(None)),
        ({"logprobs": False}, LogprobMode(None)),
        ({"logprobs": True}, LogprobMode("new", 0)),
        ({"logprobs": True, "top_logprobs": 5}, LogprobMode("new", 5)),
        ({"logprobs": 3}, LogprobMode("legacy", 3)),
        ({"logprobs": 0}, LogprobMode("legacy", 0)),
        ({"logprobs": 3, "top_logprobs": 1}, LogprobMode("legacy", 1)),
    ],
)
def test_logprob_modes(fields: dict, mode: LogprobMode) -> None:
    assert logprob_mode(_req(**fields)) == mode


def test_top_logprobs_without_logprobs_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        logprob_mode(_req(top_logprobs=2))
    assert info.value.param == "top_logprobs"


def test_max_tokens_and_its_alias() -> None:
    assert requested_max_tokens(_req()) is None
    assert requested_max_tokens(_req(max_tokens=5)) == 5
    assert requested_max_tokens(_req(max_completion_tokens=6)) == 6
    with pytest.raises(InvalidRequestError) as info:
        requested_max_tokens(_req(max_tokens=5, max_completion_tokens=6))
    assert info.value.param == "max_completion_tokens"


def test_sampling_options_report_what_is_used() -> None:
    params = for_choice(build_sampling(_req(temperature=0.3), _info(top_k=20), LogprobMode(None), echo=False), 17, 0)
    options = sampling_options(params)
    assert options["temperature"] == 0.3 and options["top_k"] == 20 and options["max_tokens"] == 17
    assert set(options) >= {
        "top_p",
        "min_p",
        "typical_p",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
    }
