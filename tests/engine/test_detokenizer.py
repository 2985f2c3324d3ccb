"""Incremental detokenization over a small real byte-level BPE tokenizer."""

from __future__ import annotations

from firebox.engine.detokenizer import IncrementalDetokenizer
from firebox.engine.types import SamplingParams

PROMPT = [5, 6, 7]


def feed(tokenizer, ids, finish=True, **sampling):
    """Feed tokens one at a time as the core does; returns (deltas, stop string)."""
    detok = IncrementalDetokenizer(tokenizer, SamplingParams(**sampling), PROMPT)
    deltas, stop = [], None
    for i, token_id in enumerate(ids):
        stop = detok.update([token_id], i + 1)
        deltas.append(detok.take_delta(finished=stop is not None or (finish and i == len(ids) - 1)))
        if stop is not None:
            break
    return deltas, stop


def test_multibyte_characters_split_across_tokens_are_never_emitted_half(tokenizer):
    text = "Fire 🔥 and ice ❄️ in 東京 and 北京!"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some token holds part of a character
    deltas, _ = feed(tokenizer, ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert "" in deltas  # a token that only starts a character emits nothing yet


def test_stop_string_across_token_boundaries_is_cut(tokenizer):
    text = "Streaming text token by token, stop here. Goodbye."
    ids = tokenizer.encode(text)
    assert not any("stop here" in tokenizer.decode([i]) for i in ids)  # it spans several tokens
    deltas, stop = feed(tokenizer, ids, stop=("stop here", "never"))
    assert stop == "stop here"
    assert "".join(deltas) == "Streaming text token by token, "


def test_include_stop_str_in_output_keeps_the_stop_string(tokenizer):
    ids = tokenizer.encode("Streaming text token by token, stop here. Goodbye.")
    deltas, stop = feed(tokenizer, ids, stop=("stop here",), include_stop_str_in_output=True)
    assert stop == "stop here" and "".join(deltas) == "Streaming text token by token, stop here"


def test_earliest_of_several_stop_strings_wins(tokenizer):
    ids = tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    deltas, stop = feed(tokenizer, ids, stop=("lazy", "fox"))
    assert stop == "fox" and "".join(deltas) == "The quick brown "


def test_possible_stop_prefix_is_held_back_then_flushed_at_finish(tokenizer):
    text = "Streaming text token by token, stop"
    ids = tokenizer.encode(text)
    deltas, stop = feed(tokenizer, ids, stop=("token, stop!",))
    assert stop is None
    # "token, stop" might still become the stop string until the request finishes
    assert "".join(deltas[:-1]) == "Streaming text token by "
    assert deltas[-1] == "token, stop"


def test_held_back_text_is_released_once_it_cannot_match(tokenizer):
    ids = tokenizer.encode("hello hello world world")
    deltas, _ = feed(tokenizer, ids, finish=False, stop=("hello there",))
    assert "".join(deltas) == "hello hello world world"


def test_stop_strings_only_count_after_min_tokens(tokenizer):
    text = "hello hello world world"
    ids = tokenizer.encode(text)
    num_first = len(tokenizer.encode("hello"))
    deltas, stop = feed(tokenizer, ids, stop=("hello",), min_tokens=num_first)
    assert stop == "hello" and "".join(deltas) == "hello "
    deltas, stop = feed(tokenizer, ids, stop=("hello",), min_tokens=len(ids))
    assert stop is None and "".join(deltas) == text


def test_skip_special_tokens(tokenizer):
    special = tokenizer.token_to_id("<|im_start|>")
    ids = [*tokenizer.encode("hello"), special, *tokenizer.encode(" world")]
    assert "".join(feed(tokenizer, ids)[0]) == "hello world"
    assert "".join(feed(tokenizer, ids, skip_special_tokens=False)[0]) == "hello<|im_start|> world"
