"""Chat truncation: drop the fewest oldest turns for the rendered prompt to fit a token budget.

Turns go oldest first, one at a time: the oldest non-system message, then any assistant or tool
replies it leaves leading; system messages at the front (and any that come to the front) stay.
The prompt is always the template's render of the messages kept, so it equals what a client
sending only those messages gets. Rendering and tokenizing once per dropped turn costs the square
of the conversation; instead each message is tokenized once, running sums of those counts predict
the cut, and renders of the kept messages around the prediction (galloping, then bisecting) find
the exact cut in a few renders. This assumes, as every template does, that dropping turns never
lengthens the prompt.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]
Rendered = tuple[str, list[int]]  # prompt text, its token ids


@dataclass(frozen=True, slots=True)
class Cut:
    """The messages kept after some turns are dropped: `prefix[:num_prefix]` + `messages[start:]`."""

    num_prefix: int
    start: int


class TurnCuts:
    """The conversations left after dropping 0, 1, 2, ... turns, as `Cut`s in that order."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.prefix: list[int] = []  # indices of the system messages kept in front
        self.cuts = list(self._cuts())

    def _cuts(self) -> Any:
        messages, last = self.messages, len(self.messages) - 1
        start = self._keep_leading_system(0)
        yield Cut(len(self.prefix), start)
        while start < last:  # more than the last message left: drop the oldest turn
            start += 1
            while start < last and messages[start]["role"] in ("assistant", "tool"):
                start += 1
            start = self._keep_leading_system(start)
            yield Cut(len(self.prefix), start)

    def _keep_leading_system(self, start: int) -> int:
        while start < len(self.messages) and self.messages[start]["role"] == "system":
            self.prefix.append(start)
            start += 1
        return start

    def kept(self, cut: Cut) -> list[Message]:
        return [self.messages[i] for i in self.prefix[: cut.num_prefix]] + self.messages[cut.start :]

    def predicted_tokens(self, costs: list[float]) -> list[float]:
        """Each cut's predicted prompt length, from per-message costs, by running sums."""
        suffix = list(itertools.accumulate(reversed(costs), initial=0.0))[::-1]  # suffix[i] = sum(costs[i:])
        prefix = list(itertools.accumulate((costs[i] for i in self.prefix), initial=0.0))
        return [prefix[cut.num_prefix] + suffix[cut.start] for cut in self.cuts]


def fewest_turns_dropped(
    messages: list[Message],
    budget: int,
    full: Rendered,
    render: Callable[[list[Message]], Rendered],
    count_tokens: Callable[[list[str]], list[int]],
) -> Rendered:
    """The render of the conversation with the fewest oldest turns dropped that fits `budget`
    (`full`, the whole conversation's render, does not); the last turn's render if none does."""
    turns = TurnCuts(messages)
    last = len(turns.cuts) - 1
    if last == 0:
        return full
    renders: dict[int, Rendered] = {0: full}

    def fits(j: int) -> bool:
        if j not in renders:
            renders[j] = render(turns.kept(turns.cuts[j]))
        return len(renders[j][1]) <= budget

    predicted = turns.predicted_tokens(_message_costs(messages, len(full[1]), count_tokens))
    guess = next((j for j in range(1, last + 1) if predicted[j] <= budget), last)
    chosen = _first_fitting(fits, guess, last)
    fits(chosen)  # rendered, whichever way the search ended
    return renders[chosen]


def _message_costs(
    messages: list[Message], num_tokens: int, count_tokens: Callable[[list[str]], list[int]]
) -> list[float]:
    """Each message's tokens, plus an even share of what the template adds around them."""
    counts = count_tokens([_message_text(m) for m in messages])
    wrapper = max(0.0, (num_tokens - sum(counts)) / len(messages))
    return [count + wrapper for count in counts]


def _message_text(message: Message) -> str:
    content = message.get("content")
    rest = {k: v for k, v in message.items() if k not in ("role", "content") and v is not None}
    text = content if isinstance(content, str) else json.dumps(content) if content is not None else ""
    return text + (json.dumps(rest) if rest else "")


def _first_fitting(fits: Callable[[int], bool], guess: int, last: int) -> int:
    """The smallest j in 1..last with fits(j), or `last` when none: fits(0) is False and fits
    only turns True as j grows. Gallops from `guess`, then bisects."""
    lo, hi, step = 0, last + 1, 1  # fits(lo) is False; fits(hi) is True (last + 1: none known)
    if fits(guess):
        hi = guess
        while hi - step > lo and fits(hi - step):
            hi, step = hi - step, step * 2
        lo = max(lo, hi - step)
    else:
        lo = guess
        while lo + step < hi and not fits(lo + step):
            lo, step = lo + step, step * 2
        hi = min(hi, lo + step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return min(hi, last)
