"""Anthropic Messages API over the chat machinery: request -> chat request -> ChatService's own
preparation (template, tools and their grammar, parsers), plan, run and records -> Anthropic's
answer or events.

`_MessagesOverChat` is the chat service with Anthropic's output shapes: it answers with a
`message` and streams Anthropic's events in place of chat chunks (the chunk hooks it inherits are
not used). Errors keep firebox's statuses; the API layer writes them in Anthropic's shape, and a
stream's mid-way failure becomes an `error` event here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from firebox.protocol.chat import ChatCompletionRequest
from firebox.protocol.common import ErrorResponse, ResponseModel
from firebox.protocol.messages import (
    MessageResponse,
    MessagesErrorResponse,
    MessagesPrompt,
    MessagesRequest,
    TokenCount,
)
from firebox.serving.chat import ChatService
from firebox.serving.errors import ServingError
from firebox.serving.messages.output import message_body, message_events
from firebox.serving.messages.request import chat_request
from firebox.serving.generation.output import ChoiceRenderer
from firebox.serving.inflight import InflightLimiter
from firebox.serving.records import RequestContext, RequestRecorder, refusal_record
from firebox.serving.registry import ModelHandle
from firebox.serving.generation.run import GenerationRun
from firebox.serving.generation.service import Completed, Streaming


class _MessagesOverChat(ChatService):
    endpoint = "messages"

    def response(  # type: ignore[override]
        self, req: ChatCompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> MessageResponse:
        return message_body(run, renderers[0])

    async def stream_chunks(
        self, req: ChatCompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> AsyncIterator[ResponseModel]:
        async for event in message_events(run, renderers[0]):
            yield event


class MessagesService:
    endpoint = "messages"

    def __init__(self, recorder: RequestRecorder, inflight: InflightLimiter | None = None) -> None:
        self._recorder = recorder
        self._chat = _MessagesOverChat(recorder, inflight)

    async def create(self, req: MessagesRequest, handle: ModelHandle, ctx: RequestContext) -> Completed | Streaming:
        try:
            chat = chat_request(req)
        except ServingError as exc:  # refused before the engine: still one record
            user = req.metadata.user_id if req.metadata else None
            self._recorder.emit(refusal_record(ctx, handle.model.name, handle.deployment, exc.status_code, user, None))
            raise
        result = await self._chat.create(chat, handle, ctx)
        if isinstance(result, Streaming):
            return Streaming(_error_events(result.chunks), result.meta)
        return result

    def count_tokens(self, req: MessagesPrompt, handle: ModelHandle) -> TokenCount:
        """The prompt's tokens as a request would render it: template, system block, tools."""
        prepared = self._chat.prepare(chat_request(req), handle.engine)
        return TokenCount(input_tokens=len(prepared.prompts[0].token_ids))


async def _error_events(events: AsyncIterator[ResponseModel]) -> AsyncIterator[ResponseModel]:
    """The stream's events, a failure (firebox's error body) as Anthropic's `error` event."""
    try:
        async for event in events:
            yield MessagesErrorResponse.of(event.error) if isinstance(event, ErrorResponse) else event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
