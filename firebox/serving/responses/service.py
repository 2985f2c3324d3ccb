"""Responses API: input items (plus a stored conversation) -> chat template -> engine -> `response`.

The request becomes the chat request of the same meaning (`response_request.py`), prepared by
ChatService itself: the chat template, function tools (their prompt, grammar and parser), the
context policy, planning, sampling defaults, perf metrics and records are the chat machinery's
own; the calls it parses out of the text become `function_call` items. With `store` (the default)
the response and its own request's input items are kept in a `ResponseStore`, per account: a
continuation (`previous_response_id`) walks the chain back (`response_chain.py`, capped in turns
and bytes), and `instructions` are not carried over (as OpenAI documents). Streams are stored
`in_progress` first, then updated.
"""

from __future__ import annotations

from typing import Any

from firebox.protocol.responses import ObjectList, ResponseCreateRequest, ResponseDeleted
from firebox.serving.auth import Principal
from firebox.serving.chat import ChatService
from firebox.serving.errors import ContextLengthError, InvalidRequestError, ServingError
from firebox.serving.generation.output import ChoiceRenderer
from firebox.serving.generation.plan import Plan, start_run
from firebox.serving.inflight import InflightLimiter
from firebox.serving.prompt import PreparedPrompt
from firebox.serving.records import RequestContext, RequestRecorder
from firebox.serving.registry import ModelHandle
from firebox.serving.responses.body import ResponseBuilder, ResponseFrame, echoed_settings
from firebox.serving.responses.chain import earlier_items, stored_input_items
from firebox.serving.responses.events import StoredRun, response_events
from firebox.serving.responses.items import check_call_outputs, input_items, new_item_id
from firebox.serving.responses.request import chat_request
from firebox.serving.responses.store import Order, ResponseStore, page_of
from firebox.serving.generation.run import GenerationRun, run_to_end, start_stream
from firebox.serving.generation.service import Completed, PreparedRequest, Streaming, refusal_recorded


class ResponseNotFoundError(ServingError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "NOT_FOUND"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id {response_id!r} not found.", param="response_id")


def check_input_fits(prompt: PreparedPrompt, max_model_len: int) -> None:
    """truncation "auto" drops the oldest items to fit; "disabled" (the default) refuses."""
    if len(prompt.token_ids) >= max_model_len:
        raise ContextLengthError(
            f"The input is too long: {len(prompt.token_ids)} tokens, while this model's maximum context length "
            f"is {max_model_len} tokens (input plus at least one output token must fit). Shorten the input or "
            'pass truncation="auto" to drop the oldest items.',
            param="input",
        )


class ResponsesService:
    endpoint = "responses"

    def __init__(self, recorder: RequestRecorder, store: ResponseStore, inflight: InflightLimiter | None = None) -> None:
        self._recorder = recorder
        self._store = store
        self._inflight = inflight
        self._chat = ChatService(recorder)  # prepares the chat request of each responses request

    async def create(
        self, req: ResponseCreateRequest, handle: ModelHandle, ctx: RequestContext
    ) -> Completed | Streaming:
        with refusal_recorded(self._recorder, ctx, handle, req):
            earlier, items = await self._conversation(req, ctx.principal.account_id)
            chat = chat_request(req, [*earlier, *items])
            prepared = await self._chat.prepare_off_loop(chat, handle.engine)
            check_input_fits(prepared.prompts[0], handle.engine.model_info.max_model_len)
            plan = prepared.plan(chat, handle, ctx, "input")
        run = start_run(handle, ctx, plan, self._recorder, self._inflight)
        stored = self._stored_run(req, handle, ctx, plan, run, items, prepared)
        if req.stream:
            await start_stream(run)
            return Streaming(response_events(stored), run.meta())
        await run_to_end(run)
        stored.builder.add_whole()
        body = stored.builder.body(stored.builder.final_status())
        await stored.save(body)
        return Completed(body, run.meta())

    def _stored_run(
        self, req: ResponseCreateRequest, handle: ModelHandle, ctx: RequestContext, plan: Plan, run: GenerationRun,
        items: list[dict[str, Any]], prepared: PreparedRequest,
    ) -> StoredRun:  # fmt: skip
        settings = echoed_settings(req, handle.name, plan.sampling_options, is_priority=plan.options.priority < 0)
        frame = ResponseFrame(f"resp_{ctx.request_id}", new_item_id(), ctx.created, settings)
        parser = prepared.new_parser() if prepared.new_parser is not None else None
        renderer = ChoiceRenderer(handle.engine.tokenizer, plan.logprobs, plan.choices[0], parser)
        builder = ResponseBuilder(frame, run, renderer, bool(req.perf_metrics_in_response), req.max_tool_calls)
        return StoredRun(builder, self._store if req.wants_store else None, ctx.principal.account_id, items)

    async def _conversation(
        self, req: ResponseCreateRequest, account_id: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the earlier turns' input items and outputs, this request's input items)."""
        items = input_items(req.input)
        earlier: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            earlier = await earlier_items(self._store, account_id, req.previous_response_id, items)
        check_call_outputs(earlier, items)
        return earlier, items

    # --- stored responses -----------------------------------------------------------------------

    async def retrieve(self, principal: Principal, response_id: str) -> dict[str, Any]:
        body = await self._store.get(principal.account_id, response_id)
        if body is None:
            raise ResponseNotFoundError(response_id)
        return body

    async def delete(self, principal: Principal, response_id: str) -> ResponseDeleted:
        if not await self._store.delete(principal.account_id, response_id):
            raise ResponseNotFoundError(response_id)
        return ResponseDeleted(id=response_id, message=f"Response {response_id} deleted.")

    async def list(
        self, principal: Principal, limit: int, after: str | None, before: str | None, order: Order
    ) -> ObjectList:
        try:
            page, has_more = await self._store.list(principal.account_id, limit, after, before, order)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="after" if after is not None else "before") from exc
        return _object_list(page, has_more)

    async def input_items(
        self, principal: Principal, response_id: str, limit: int, after: str | None, order: Order
    ) -> ObjectList:
        """The items the model saw, newest first unless `order` is "asc"."""
        items = await stored_input_items(self._store, principal.account_id, response_id)
        if items is None:
            raise ResponseNotFoundError(response_id)
        ordered = items[::-1] if order == "desc" else items
        try:
            page, has_more = page_of(ordered, lambda item: item["id"], limit, after, None)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="after") from exc
        return _object_list(page, has_more)


def _object_list(items: list[dict[str, Any]], has_more: bool) -> ObjectList:
    first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
    return ObjectList(data=items, first_id=first, last_id=last, has_more=has_more)
