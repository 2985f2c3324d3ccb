"""Incremental detokenization with stop strings, one instance per request.

Text grows by whole characters only (`Tokenizer.decode_stream`). Stop strings are matched across
token boundaries: text that could still turn into a stop string (a suffix that is a proper prefix
of one) is held back until the next tokens decide it, and flushed when the request finishes. A
matched stop string is cut from the text (kept with `include_stop_str_in_output`) and everything
after it is dropped; the caller finishes the request in the same step.
"""

from __future__ import annotations

from collections.abc import Sequence

from firebox.engine.types import SamplingParams
from firebox.loader.tokenizer import Tokenizer

# Prompt tokens the decode stream starts from, so that the first output token is decoded in
# context (leading spaces of SentencePiece pieces) without decoding the whole prompt.
PROMPT_CONTEXT_TOKENS = 6


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, sampling: SamplingParams, prompt_token_ids: Sequence[int]) -> None:
        context = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._stream = tokenizer.decode_stream(context, skip_special_tokens=sampling.skip_special_tokens)
        self._stop = tuple(s for s in sampling.stop if s)
        self._include_stop = sampling.include_stop_str_in_output
        self._min_tokens = sampling.min_tokens
        self.stop_string: str | None = None
        self._unsent = ""  # decoded text not yet returned by `take_delta`

    def update(self, token_ids: Sequence[int], num_output_tokens: int) -> str | None:
        """Decode new tokens; returns the stop string they complete, if any.

        `num_output_tokens` counts every generated token so far (stop strings only count once it
        exceeds `min_tokens`); `token_ids` are those to show, without a final stop token."""
        if self.stop_string is not None:
            return None
        self._unsent += "".join(self._stream.step(t) for t in token_ids)
        if not self._stop or num_output_tokens <= self._min_tokens:
            return None
        match = self._find_stop()
        if match is not None:
            start, stop = match
            self._unsent = self._unsent[: start + len(stop) if self._include_stop else start]
            self.stop_string = stop
        return self.stop_string

    def take_delta(self, finished: bool) -> str:
        """The text not yet returned that is safe to send: all of it once finished, else all but
        a tail that may still become a stop string."""
        end = len(self._unsent)
        if not finished and self.stop_string is None:
            end -= self._num_held_back()
        delta, self._unsent = self._unsent[:end], self._unsent[end:]
        return delta

    def _find_stop(self) -> tuple[int, str] | None:
        """Earliest stop string in the unsent text. Sent text cannot start a match: it was sent
        only because no suffix of it was a prefix of a stop string."""
        best: tuple[int, str] | None = None
        for stop in self._stop:
            start = self._unsent.find(stop)
            if start >= 0 and (best is None or start < best[0]):
                best = (start, stop)
        return best

    def _num_held_back(self) -> int:
        """Length of the longest suffix of the unsent text that is a proper prefix of a stop string."""
        text = self._unsent
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
