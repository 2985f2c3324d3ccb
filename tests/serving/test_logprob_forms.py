"""Engine logprobs -> the API's OpenAI and legacy forms."""

from __future__ import annotations

from firebox.engine.types import TokenLogprob
from firebox.serving.generation.logprobs import LogprobFormatter, output_positions, prompt_positions
from tests.fakes import chatml_tokenizer


def test_new_form_with_alternatives_and_running_offsets() -> None:
    tok = chatml_tokenizer()
    ids = tok.encode("Paris is")
    lps = [TokenLogprob(t, -0.5, [(t, -0.5), (3, -2.0)]) for t in ids]
    formatter = LogprobFormatter(tok, num_top=2)
    first = formatter.new_form(output_positions(lps[:1])).content
    rest = formatter.new_form(output_positions(lps[1:])).content
    entries = first + rest
    assert [e.token_id for e in entries] == ids
    assert [e.text_offset for e in entries] == [0, *[len(tok.decode(ids[:i])) for i in range(1, len(ids))]]
    assert bytes(sum((e.bytes for e in entries), [])).decode() == "Paris is"
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[1].token_id == 3 for e in entries)


def test_legacy_form_includes_the_sampled_token_in_top_logprobs() -> None:
    tok = chatml_tokenizer()
    ids = tok.encode("Hello")
    lps = [TokenLogprob(t, -0.1, [(5, -0.05), (t, -0.1)]) for t in ids]
    legacy = LogprobFormatter(tok, num_top=1).legacy_form(output_positions(lps))
    assert legacy.tokens == [tok.token_text(t) for t in ids] and legacy.token_ids == ids
    assert legacy.token_logprobs == [-0.1] * len(ids)
    for top, token in zip(legacy.top_logprobs, legacy.tokens):
        assert top == {tok.token_text(5): -0.05, token: -0.1}  # one alternative plus the sampled token


def test_first_prompt_token_has_no_logprob() -> None:
    tok = chatml_tokenizer()
    prompt = tok.encode("Hello world")
    prompt_lps = [None] + [TokenLogprob(t, -1.0, [(t, -1.0)]) for t in prompt[1:]]
    positions = prompt_positions(prompt, prompt_lps, len(prompt))
    legacy = LogprobFormatter(tok, 1).legacy_form(positions)
    assert legacy.token_logprobs[0] is None and legacy.top_logprobs[0] is None
    assert legacy.token_logprobs[1:] == [-1.0] * (len(prompt) - 1)
    new = LogprobFormatter(tok, 1).new_form(positions).content
    assert new[0].logprob == 0.0 and new[0].top_logprobs[0].token_id == prompt[0]
    tail = prompt_positions(prompt, prompt_lps, 2)
    assert [p.token_id for p in tail] == prompt[-2:] and all(p.logprob == -1.0 for p in tail)
