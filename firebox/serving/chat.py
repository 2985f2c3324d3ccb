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
from firebox.serving.prompt import PreparedPrompt, chat_prompt, message_dicts, truncation_budget
from firebox.serving.run import GenerationRun
from firebox.serving.service import GenerationService


class ChatService(GenerationService[ChatCompletionRequest]):
    endpoint = "chat.completions"
    prompt_param = "messages"

    def prepare_prompts(self, req: ChatCompletionRequest, engine: EngineClient) -> list[PreparedPrompt]:
        budget = truncation_budget(
            req.context_length_exceeded_behavior, engine.model_info.max_model_len, req.prompt_truncate_len
        )
        return [chat_prompt(engine.tokenizer, message_dicts(req.messages), budget)]

    def response(
        self, req: ChatCompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> ChatCompletionResponse:
        ctx = run.info.ctx
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}",
            created=ctx.created,
            model=run.info.handle.name,
            choices=[ChatChoice(message=ResponseMessage(content=r.text), **r.choice_fields(req)) for r in renderers],
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
        return ChatChunkChoice(delta=ChoiceDelta(content=delta.output.text_delta), **delta.choice_fields(req))
