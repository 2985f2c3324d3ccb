"""Chat templates render exactly as transformers' `apply_chat_template` renders them."""

from __future__ import annotations

import pytest

from firebox.serving.chat_template import ChatTemplateError, render_chat_template
from tests.fakes import CHATML_TEMPLATE, build_backend

LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    "{{- system_message }}\n"
    '{{- "<|eot_id|>" }}\n'
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# strict alternation with raise_exception, tool calls through tojson, a namespace and loop controls
STRICT_TEMPLATE = (
    "{% set ns = namespace(turns=0) %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[SYS] ' + message['content'] + '\\n' }}{% continue %}{% endif %}"
    "{% if (message['role'] == 'user') != (ns.turns % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set ns.turns = ns.turns + 1 %}"
    "{% if message.tool_calls is defined %}{{ '<tools>' + message.tool_calls | tojson + '</tools>' }}{% endif %}"
    "{{ '<' + message['role'] + '>' + (message['content'] or '') | tojson + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant>' }}{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What's the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "What's its population? <b>&amp; café</b> 你好"},
    ],
    [
        {"role": "user", "content": "call it"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
        },
        {"role": "user", "content": "thanks"},
    ],
]
SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>"}


def _transformers_render(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=build_backend(), **SPECIAL)
    hf.chat_template = template
    return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "strict": STRICT_TEMPLATE}
# the tool-call conversation has a null content, which only the strict template handles
CASES = [(name, i) for name in TEMPLATES for i in range(len(CONVERSATIONS)) if i < 2 or name == "strict"]


@pytest.mark.parametrize(("template_name", "conversation"), CASES)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rendering_matches_transformers(template_name: str, conversation: int, add_generation_prompt: bool) -> None:
    template, messages = TEMPLATES[template_name], CONVERSATIONS[conversation]
    expected = _transformers_render(template, messages, add_generation_prompt)
    ours = render_chat_template(template, messages, add_generation_prompt=add_generation_prompt, special_tokens=SPECIAL)
    assert ours == expected


def test_raise_exception_becomes_a_template_error_with_its_message() -> None:
    messages = [{"role": "assistant", "content": "I speak first"}]
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        render_chat_template(STRICT_TEMPLATE, messages, add_generation_prompt=True, special_tokens=SPECIAL)


def test_tojson_does_not_escape_html() -> None:
    out = render_chat_template(
        STRICT_TEMPLATE,
        [{"role": "user", "content": "<b>&</b> é"}],
        add_generation_prompt=False,
        special_tokens=SPECIAL,
    )
    assert '"<b>&</b> é"' in out


def test_sandbox_refuses_attribute_escapes() -> None:
    template = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(ChatTemplateError):
        render_chat_template(
            template, [{"role": "user", "content": "x"}], add_generation_prompt=False, special_tokens={}
        )


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        render_chat_template("{% for %}", [], add_generation_prompt=False, special_tokens={})
