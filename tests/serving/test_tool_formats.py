"""Tool-call formats: which one a chat template gets, and that each format's grammar (compiled by
llguidance against a real tokenizer, as the engine compiles it) accepts the family's calls and
refuses broken ones; the same for the thinking wrapper around an answer's grammar."""

from __future__ import annotations

import functools

import llguidance
import pytest
from tokenizers import Tokenizer as HFTokenizer

from firebox.engine.structured_output import to_llguidance
from firebox.engine.types import GrammarSyntax, StructuredOutputSpec
from firebox.loader.tokenizer import Tokenizer
from firebox.serving.reasoning import ThinkingMode, answer_grammar
from firebox.serving.structured_output import json_schema_spec
from firebox.serving.tools.calling import ChoiceMode, FunctionTool, ToolCalling
from firebox.serving.tools.formats import FORMATS, format_for_template, tool_format
from tests.fakes import CHATML_TEMPLATE, chatml_tokenizer

WEATHER = FunctionTool("get_weather", None, {"type": "object", "properties": {"city": {"type": "string"}}})
TIME = FunctionTool("get_time", None, {"type": "object", "properties": {}})

# the distinctive lines of real templates (Qwen2.5 / Hermes, Mistral v0.3, Llama 3.1 and 3.2)
QWEN_TEMPLATE = '{{- "<tool_call>\\n{\\"name\\": \\"" }}{{ tool_call.name }}'
MISTRAL_TEMPLATE = '{%- if tools %}[AVAILABLE_TOOLS]{% endif %}{{- "[TOOL_CALLS] [" }}'
LLAMA31_TEMPLATE = '{{- "Environment: ipython\\n" }}{{- "<|python_tag|>" + tool_call.name }}'
LLAMA32_TEMPLATE = '{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}"parameters": '


@pytest.mark.parametrize(
    ("template", "name"),
    [
        (QWEN_TEMPLATE, "hermes"),
        (MISTRAL_TEMPLATE, "mistral"),
        (LLAMA31_TEMPLATE, "llama3_json"),
        (LLAMA32_TEMPLATE, "llama3_json"),
        (CHATML_TEMPLATE, "json_list"),
        (None, "json_list"),
    ],
)
def test_the_template_picks_the_format(template: str | None, name: str) -> None:
    assert format_for_template(template).name == name


def test_a_named_format_wins_over_the_template() -> None:
    assert format_for_template(QWEN_TEMPLATE, "mistral").name == "mistral"
    with pytest.raises(ValueError, match="known: hermes, json_list, llama3_json, mistral"):
        format_for_template(None, "nope")


@pytest.mark.parametrize("name", list(FORMATS))
def test_rendered_past_calls_parse_back(name: str) -> None:
    fmt = tool_format(name)
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]
    text = fmt.render_calls(calls)
    if fmt.repeats:  # one block per call
        blocks = [block.split(fmt.open_tag, 1)[1] for block in text.split(fmt.close_tag or "") if block.strip()]
        assert [c for block in blocks for c in fmt.parse_block(block.strip())] == calls
    else:
        body = text.split(fmt.open_tag, 1)[1]
        assert fmt.parse_block(body.removesuffix(fmt.close_tag or "").strip()) == calls


# --- grammars, compiled as the engine compiles them ------------------------------------------


@functools.cache
def _ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(tokenizer.to_json(), n_vocab=tokenizer.vocab_size, eos_token=list(tokenizer.eos_token_ids))


def accepts(spec: StructuredOutputSpec, text: str, tokenizer: Tokenizer | None = None) -> bool:
    """Whether the grammar takes `text` (encoded as the model would write it) as a whole output."""
    tokenizer = tokenizer or chatml_tokenizer()
    ll_tokenizer = _ll_tokenizer(tokenizer)
    grammar = to_llguidance(spec)
    assert not llguidance.LLMatcher.validate_grammar(grammar, ll_tokenizer)
    matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
    return all(matcher.consume_token(t) for t in tokenizer.encode(text)) and matcher.is_accepting()


@functools.cache
def mistral_tokenizer() -> Tokenizer:
    """The fake tokenizer with `[TOOL_CALLS]` as a special token, as Mistral's tokenizers have it."""
    base = chatml_tokenizer()
    backend = HFTokenizer.from_str(base.to_json())
    backend.add_special_tokens(["[TOOL_CALLS]"])
    return Tokenizer(backend, base.special, MISTRAL_TEMPLATE)


def _calling(mode: ChoiceMode = ChoiceMode.AUTO, parallel: bool = True, forced: str | None = None) -> ToolCalling:
    return ToolCalling((WEATHER, TIME), mode, forced, parallel)


GOOD_CALLS = {
    "json_list": '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]</tool_call>',
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
    "mistral": '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]',
    "llama3_json": '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}',
}  # fmt: skip
UNKNOWN_TOOL = {name: text.replace("get_weather", "get_wether") for name, text in GOOD_CALLS.items()}


@pytest.mark.parametrize("name", list(GOOD_CALLS))
@pytest.mark.parametrize("mode", [ChoiceMode.AUTO, ChoiceMode.REQUIRED])
def test_the_grammar_takes_the_familys_calls_and_refuses_an_unknown_tool(name: str, mode: ChoiceMode) -> None:
    spec = tool_format(name).grammar(_calling(mode))
    assert spec.syntax is GrammarSyntax.LARK
    assert accepts(spec, GOOD_CALLS[name])
    assert not accepts(spec, UNKNOWN_TOOL[name])


@pytest.mark.parametrize("name", list(GOOD_CALLS))
def test_auto_takes_free_text_and_required_does_not(name: str) -> None:
    fmt = tool_format(name)
    assert accepts(fmt.grammar(_calling(ChoiceMode.AUTO)), "It is sunny in Paris.")
    assert not accepts(fmt.grammar(_calling(ChoiceMode.REQUIRED)), "It is sunny in Paris.")


def test_one_call_only_without_parallel_calls() -> None:
    for name, text in GOOD_CALLS.items():
        assert not accepts(tool_format(name).grammar(_calling(parallel=False)), text), name


def test_llama_calls_open_the_output_and_later_braces_are_text() -> None:
    spec = tool_format("llama3_json").grammar(_calling())
    assert accepts(spec, 'Use {"name": "x"} as a template.')
    assert not accepts(spec, '{"city": "Paris"}')  # an output that opens with a brace is a call
    assert not accepts(spec, ' {"name": "get_time", "parameters": {}}')  # nor may text start blank


def test_a_special_token_tag_is_that_token_and_keeps_special_tokens() -> None:
    tokenizer, fmt = mistral_tokenizer(), tool_format("mistral")
    special_id = tokenizer.token_to_id("[TOOL_CALLS]")
    assert fmt.special_tags(tokenizer) == {"[TOOL_CALLS]": special_id}
    spec = fmt.grammar(_calling(), tokenizer)
    assert f"<[{special_id}]>" in spec.source and "lazy" not in spec.source
    assert accepts(spec, "Let me check. " + GOOD_CALLS["mistral"], tokenizer)
    assert accepts(spec, "Plain [TOOL_CALLS text.", tokenizer)
    assert not accepts(spec, UNKNOWN_TOOL["mistral"], tokenizer)
    assert fmt.special_tags(chatml_tokenizer()) == {}  # text there: a lazy trigger instead


# --- the answer after the thinking ------------------------------------------------------------

SCHEMA = json_schema_spec({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]})


def test_a_schema_constrains_only_the_answer_after_the_thinking() -> None:
    spec = answer_grammar(SCHEMA, ThinkingMode.OPTIONAL)
    assert spec is not None and spec.syntax is GrammarSyntax.LARK
    assert accepts(spec, '<think>\nIs it {4}? Surely. </thi nk\n</think>\n\n{"answer": 4}')
    assert accepts(spec, '{"answer": 4}')  # no thinking at all
    assert not accepts(spec, '<think>hmm</think>\n\nThe answer is 4.')
    assert not accepts(spec, '<think>a</think>{"answer": 4}</think>{"answer": 5}')


def test_a_prompt_that_opened_the_thinking_starts_inside_it() -> None:
    spec = answer_grammar(SCHEMA, ThinkingMode.OPENED)
    assert spec is not None
    assert accepts(spec, 'It is 4.\n</think>\n\n{"answer": 4}')
    assert not accepts(spec, '{"answer": 4}')


def test_thinking_off_or_no_grammar_leaves_the_spec_alone() -> None:
    assert answer_grammar(SCHEMA, ThinkingMode.OFF) is SCHEMA
    assert answer_grammar(SCHEMA, None) is SCHEMA
    assert answer_grammar(None, ThinkingMode.OPTIONAL) is None


@pytest.mark.parametrize("name", list(GOOD_CALLS))
def test_tool_grammars_and_gbnf_compose_with_thinking(name: str) -> None:
    calls = answer_grammar(tool_format(name).grammar(_calling(ChoiceMode.REQUIRED)), ThinkingMode.OPTIONAL)
    assert calls is not None and accepts(calls, "<think>\nThe weather, then.\n</think>\n\n" + GOOD_CALLS[name])
    gbnf = answer_grammar(StructuredOutputSpec(GrammarSyntax.GBNF, 'root ::= "yes" | "no"'), ThinkingMode.OPTIONAL)
    assert gbnf is not None and accepts(gbnf, "<think>Hmm.</think>\n\nyes") and not accepts(gbnf, "<think>x</think>maybe")


def test_call_json_is_compact_and_closed() -> None:
    spec = tool_format("hermes").grammar(_calling(ChoiceMode.NAMED, forced="get_weather"))
    assert not accepts(spec, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "x": 1}}\n</tool_call>')
    assert not accepts(spec, '<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris"}}\n</tool_call>')
