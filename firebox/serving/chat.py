"""Chat completions: messages -> chat template -> engine, outputs -> `chat.completion` shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from firebox.engine.types import EngineClient
from firebox.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceDelta,
    ResponseMessage,
)
from firebox.serving.generation.output import ChoiceRenderer, Delta
from firebox.serving.prompt import chat_prompt, message_dicts, truncation_budget
from firebox.serving.reasoning import ThinkingMode, new_output_parser, resolve_thinking
from firebox.serving.generation.run import GenerationRun
from firebox.serving.generation.service import GenerationService, PreparedRequest
from firebox.serving.tools.calling import resolve_tool_calling
from firebox.serving.tools.formats import format_for_template
from firebox.serving.tools.prompting import prompt_messages


class ChatService(GenerationService[ChatCompletionRequest]):
    endpoint = "chat.completions"
    prompt_param = "messages"

    def prepare(self, req: ChatCompletionRequest, engine: EngineClient) -> PreparedRequest:
        tokenizer, template = engine.tokenizer, engine.tokenizer.chat_template
        budget = truncation_budget(
            req.context_length_exceeded_behavior, engine.model_info.max_model_len, req.prompt_truncate_len
        )
        calling = resolve_tool_calling(req)
        thinking = resolve_thinking(req, template)
        fmt = format_for_template(template, engine.model_info.tool_call_format)
        messages, tools = prompt_messages(message_dicts(req.messages), calling, fmt, template)
        variables = thinking.template_variables() if thinking is not None else None
        prompt = chat_prompt(tokenizer, messages, budget, tools=tools, variables=variables)
        mode = ThinkingMode.of_prompt(prompt.text) if thinking is not None else None
        calls = calling if calling is not None and calling.may_call else None
        return PreparedRequest(
            [prompt],
            fmt.grammar(calls, tokenizer) if calls is not None else None,
            lambda: new_output_parser(fmt if calls is not None else None, mode),
            thinking=mode,
            keep_special_tokens=calls is not None and bool(fmt.special_tags(tokenizer)),
        )

    def response(
        self, req: ChatCompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> ChatCompletionResponse:
        ctx = run.info.ctx
        choices = [ChatChoice(message=_message(r), **r.choice_fields(req)) for r in renderers]  # before usage:
        return ChatCompletionResponse(  # parsing counts the thinking tokens
            id=f"chatcmpl-{ctx.request_id}",
            created=ctx.created,
            model=run.info.handle.name,
            choices=choices,
            usage=run.usage(),
            perf_metrics=run.perf_metrics() if req.perf_metrics_in_response else None,
            prompt_token_ids=run.choices[0].prompt.token_ids if req.return_token_ids else None,
        )

    def chunk(self, run: GenerationRun, choices: list[Any], **extra: Any) -> ChatCompletionChunk:
        ctx = run.info.ctx
        return ChatCompletionChunk(
            id=f"chatcmpl-{ctx.request_id}", created=ctx.created, model=run.info.handle.name, choices=choices, **extra
        )

    def opening_choice(
        self, req: ChatCompletionRequest, renderer: ChoiceRenderer
    ) -> tuple[ChatChunkChoice, dict[str, Any]]:
        """The role (and the echoed prompt); choice 0's chunk carries the prompt ids."""
        choice = renderer.choice
        delta = ChoiceDelta(role="assistant", content=choice.echo_text)
        opening = ChatChunkChoice(index=choice.index, delta=delta, logprobs=renderer.echo_logprobs())
        ids = choice.prompt.token_ids if req.return_token_ids and choice.index == 0 else None
        return opening, {"prompt_token_ids": ids}

    def delta_choice(self, req: ChatCompletionRequest, delta: Delta) -> ChatChunkChoice:
        parsed = delta.renderer.parse_delta(delta.output)
        calls = [call.as_openai() for call in parsed.tool_calls] or None
        content = parsed.content if parsed.content or not (calls or parsed.reasoning) else None
        message = ChoiceDelta(content=content, reasoning_content=parsed.reasoning or None, tool_calls=calls)
        return ChatChunkChoice(delta=message, **delta.choice_fields(req))


def _message(renderer: ChoiceRenderer) -> ResponseMessage:
    parsed = renderer.parsed()
    calls = [call.as_openai() for call in renderer.tool_calls] or None
    return ResponseMessage(
        content=parsed.content if parsed.content or not calls else None,
        reasoning_content=parsed.reasoning or None,
        tool_calls=calls,
    )
