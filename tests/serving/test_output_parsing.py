"""The output-parsing stage alone, on recorded outputs of each model family: tool calls in every
format, thinking (Qwen3, R1-style prompts that open it) and the two together.

Every text is also fed in two pieces at every split point and one character at a time: the joined
content, reasoning and calls must equal the whole-text parse. Content is only ever appended to,
so a joined content equal to the clean expected text proves no fragment of a tag ever reached it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from firebox.serving.output_parsing import OutputParser, ParsedDelta, ReasoningState
from firebox.serving.reasoning import ThinkingMode, new_output_parser
from firebox.serving.tools.formats import tool_format

WEATHER = ("get_weather", {"city": "Paris"})
TIME = ("get_time", {})


@dataclass(frozen=True)
class Recorded:
    fmt: str | None  # tool format; None: no tools
    mode: ThinkingMode | None  # thinking; None: a model that does not think
    text: str
    content: str
    calls: tuple[tuple[str, dict], ...] = ()
    reasoning: str = ""


RECORDED = {
    "json_list: text then calls": Recorded(
        "json_list", None,
        'Let me look that up. <tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {}}]</tool_call>',
        "Let me look that up. ", (WEATHER, TIME),
    ),
    "json_list: no call": Recorded("json_list", None, "It is <b>sunny</b> in Paris.", "It is <b>sunny</b> in Paris."),
    "hermes (Qwen2.5): two blocks": Recorded(
        "hermes", None,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        "", (WEATHER, TIME),
    ),
    "hermes: text, a call, more text": Recorded(
        "hermes", None,
        'I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nDone.',
        "I will check.\n\nDone.", (WEATHER,),
    ),
    "hermes: a tag that is no call stays text": Recorded(
        "hermes", None, "<tool_call>not json</tool_call> sorry", "<tool_call>not json</tool_call> sorry"
    ),
    "mistral (v0.3)": Recorded(
        "mistral", None,
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]',
        "", (WEATHER, TIME),
    ),
    "mistral: text before the calls": Recorded(
        "mistral", None,
        'Checking.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "Checking.", (WEATHER,),
    ),
    "mistral: [TOOL brackets in text": Recorded("mistral", None, "Use [TOOL] or [TOOLS].", "Use [TOOL] or [TOOLS]."),
    "llama3_json (3.2): a bare call": Recorded(
        "llama3_json", None, '{"name": "get_weather", "parameters": {"city": "Paris"}}', "", (WEATHER,)
    ),
    "llama3_json (3.1): after <|python_tag|>, two calls": Recorded(
        "llama3_json", None,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}',
        "", (WEATHER, TIME),
    ),
    "llama3_json: an answer": Recorded(
        "llama3_json", None, "The weather in Paris is {sunny}.", "The weather in Paris is {sunny}."
    ),
    "llama3_json: JSON that is no call stays text": Recorded(
        "llama3_json", None, '{"city": "Paris"}', '{"city": "Paris"}'
    ),
    "qwen3: thinking, then the answer": Recorded(
        None, ThinkingMode.OPTIONAL,
        "<think>\nThe user asks 2 + 2. That is 4.\n</think>\n\nThe answer is 4.",
        "The answer is 4.", reasoning="The user asks 2 + 2. That is 4.",
    ),
    "qwen3: empty thinking": Recorded(None, ThinkingMode.OPTIONAL, "<think>\n\n</think>\n\nHi!", "Hi!"),
    "qwen3, thinking off: the answer as written": Recorded(None, ThinkingMode.OFF, "Hello <there>", "Hello <there>"),
    "qwen3: cut off while thinking": Recorded(
        None, ThinkingMode.OPTIONAL, "<think>\nLet me count: 1, 2, 3 </thi", "", reasoning="Let me count: 1, 2, 3 </thi"
    ),
    "r1-style: the prompt opened the thinking": Recorded(
        None, ThinkingMode.OPENED, "Okay, 2+2=4.\n</think>\n\n**4**", "**4**", reasoning="Okay, 2+2=4."
    ),
    "qwen3 + hermes: thinking, then a call": Recorded(
        "hermes", ThinkingMode.OPTIONAL,
        "<think>\nI should call get_weather for Paris.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "", (WEATHER,), "I should call get_weather for Paris.",
    ),
    "qwen3 + hermes: a tag inside the thinking is thinking": Recorded(
        "hermes", ThinkingMode.OPTIONAL,
        "<think>Maybe <tool_call>? No.</think>No call needed.",
        "No call needed.", reasoning="Maybe <tool_call>? No.",
    ),
}  # fmt: skip


def _new_parser(case: Recorded) -> Callable[[], OutputParser]:
    fmt = tool_format(case.fmt) if case.fmt is not None else None

    def new() -> OutputParser:
        parser = new_output_parser(fmt, case.mode)
        assert parser is not None
        return parser

    return new


def _parse(new_parser: Callable[[], OutputParser], pieces: list[str]) -> tuple[ParsedDelta, OutputParser]:
    parser, whole = new_parser(), ParsedDelta()
    for piece in pieces:
        whole.add(parser.feed(piece))
    return whole.add(parser.finish()), parser


def _summary(parsed: ParsedDelta) -> tuple[str, str, list[tuple[str, dict]]]:
    calls = [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls]
    assert [c.index for c in parsed.tool_calls] == list(range(len(calls)))
    return parsed.content, parsed.reasoning, calls


@pytest.mark.parametrize("name", list(RECORDED))
def test_the_whole_output_splits_into_content_reasoning_and_calls(name: str) -> None:
    case = RECORDED[name]
    parsed, parser = _parse(_new_parser(case), [case.text])
    assert _summary(parsed) == (case.content, case.reasoning, [(n, a) for n, a in case.calls])
    assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == list(case.calls)


@pytest.mark.parametrize("name", list(RECORDED))
def test_two_pieces_at_every_split_point_parse_as_the_whole(name: str) -> None:
    case = RECORDED[name]
    expected = _summary(_parse(_new_parser(case), [case.text])[0])
    for split in range(len(case.text) + 1):
        pieces = [case.text[:split], case.text[split:]]
        assert _summary(_parse(_new_parser(case), pieces)[0]) == expected, f"split at {split}"


@pytest.mark.parametrize("name", list(RECORDED))
def test_one_character_at_a_time_parses_as_the_whole(name: str) -> None:
    case = RECORDED[name]
    expected = _summary(_parse(_new_parser(case), [case.text])[0])
    assert _summary(_parse(_new_parser(case), list(case.text))[0]) == expected


def test_content_is_sent_as_soon_as_it_cannot_be_a_tag() -> None:
    parser = new_output_parser(tool_format("hermes"), None)
    assert parser is not None
    assert parser.feed("Sunny <").content == "Sunny "  # "<" may open <tool_call>
    assert parser.feed("b").content == "<b"
    assert parser.feed("> today").content == "> today"


def test_a_call_is_sent_whole_once_its_block_closes() -> None:
    parser = new_output_parser(tool_format("hermes"), None)
    assert parser is not None
    first = parser.feed('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool')
    assert not first.tool_calls and not first.content
    (call,) = parser.feed("_call>").tool_calls
    assert call.name == "get_time" and json.loads(call.arguments) == {} and call.id.startswith("call_")


@pytest.mark.parametrize(
    ("text", "state"),
    [("Hello", ReasoningState.NONE), ("<think>Hmm", ReasoningState.THINKING), ("<think>Hm</think>Hi", ReasoningState.DONE)],
)
def test_the_reasoning_state_after_the_output(text: str, state: ReasoningState) -> None:
    parser = new_output_parser(None, ThinkingMode.OPTIONAL)
    assert parser is not None
    parser.feed(text)
    parser.finish()
    assert parser.reasoning_state is state


def test_reasoning_streams_before_the_thinking_ends() -> None:
    parser = new_output_parser(None, ThinkingMode.OPTIONAL)
    assert parser is not None
    assert parser.feed("<thi").reasoning == "" and parser.reasoning_state is ReasoningState.NONE
    assert parser.feed("nk>\nStep one. ").reasoning == "Step one."  # the trailing blank waits
    assert parser.reasoning_state is ReasoningState.THINKING
    assert parser.feed("Step two.</think>\n\n").reasoning == " Step two."
    assert parser.reasoning_state is ReasoningState.DONE
    assert parser.feed("Answer").content == "Answer"


def test_a_close_tag_inside_a_call_argument_does_not_end_the_call() -> None:
    from firebox.serving.output_parsing import ToolCallParser
    from firebox.serving.tools.formats import tool_format

    text = 'Sure.<tool_call>[{"name": "note", "arguments": {"text": "a </tool_call> b"}}]</tool_call>'
    for pieces in ([text], list(text)):  # whole, and one character at a time
        parser = ToolCallParser(tool_format("json_list"))
        content, calls = "", []
        for piece in pieces:
            delta = parser.feed(piece)
            content += delta.content
            calls += delta.tool_calls
        final = parser.finish()
        content += final.content
        calls += final.tool_calls
        assert content == "Sure."
        assert [(c.name, c.arguments) for c in calls] == [("note", '{"text": "a </tool_call> b"}')]
