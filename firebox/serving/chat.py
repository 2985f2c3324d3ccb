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
from firebox.serving.output import ChoiceRenderer, Delta
from firebox.serving.output_parsing import ToolCallParser
from firebox.serving.prompt import chat_prompt, message_dicts, truncation_budget
from firebox.serving.run import GenerationRun
from firebox.serving.service import GenerationService, PreparedRequest
from firebox.serving.tools.calling import resolve_tool_calling
from firebox.serving.tools.formats import format_for_template
from firebox.serving.tools.prompting import prompt_messages


class ChatService(GenerationService[ChatCompletionRequest]):
    endpoint = "chat.completions"
    prompt_param = "messages"

    def prepare(self, req: ChatCompletionRequest, engine: EngineClient) -> PreparedRequest:
        tokenizer = engine.tokenizer
        budget = truncation_budget(
            req.context_length_exceeded_behavior, engine.model_info.max_model_len, req.prompt_truncate_len
        )
        calling = resolve_tool_calling(req)
        fmt = format_for_template(tokenizer.chat_template)
        messages, tools = prompt_messages(message_dicts(req.messages), calling, fmt, tokenizer.chat_template)
        prompts = [chat_prompt(tokenizer, messages, budget, tools=tools)]
        if calling is None or not calling.may_call:
            return PreparedRequest(prompts)
        return PreparedRequest(prompts, fmt.grammar(calling), lambda: ToolCallParser(fmt))

    def response(
        self, req: ChatCompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> ChatCompletionResponse:
        ctx = run.info.ctx
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}",
            created=ctx.created,
            model=run.info.handle.name,
            choices=[ChatChoice(message=_message(r), **r.choice_fields(req)) for r in renderers],
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
        content = parsed.content if parsed.content or not calls else None
        return ChatChunkChoice(delta=ChoiceDelta(content=content, tool_calls=calls), **delta.choice_fields(req))


def _message(renderer: ChoiceRenderer) -> ResponseMessage:
    parsed = renderer.parsed()
    calls = [call.as_openai() for call in renderer.tool_calls] or None
    return ResponseMessage(content=parsed.content if parsed.content or not calls else None, tool_calls=calls)
