"""Responses API: input items (plus a stored conversation) -> chat template -> engine -> `response`.

The request becomes a chat-style `GenerationParams` so that planning, sampling defaults, the
context policy, perf metrics and request records are the chat machinery's own. With `store` (the
default) the response and every input item the model saw are kept in a `ResponseStore`, per
account: a continuation (`previous_response_id`) reads them back, and `instructions` are not
carried over (as OpenAI documents). Streams are stored `in_progress` first, then updated.

Function tools go through the chat machinery (`response_tools.py`): calls and their outputs
among the items become chat's assistant `tool_calls` and `tool` messages, the tools reach the
chat template (or firebox's default tool prompt), the model family's grammar constrains the
calls and its parser splits them out of the text into `function_call` items.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from firebox.engine.types import EngineClient
from firebox.protocol.params import GenerationParams
from firebox.protocol.responses import CHAT_FIELDS, ObjectList, ResponseCreateRequest, ResponseDeleted
from firebox.serving.auth import Principal
from firebox.serving.errors import ContextLengthError, InvalidRequestError, ServingError
from firebox.serving.output import ChoiceRenderer
from firebox.serving.plan import Plan, plan_generation, start_run
from firebox.serving.prompt import PreparedPrompt, chat_prompt
from firebox.serving.records import RequestContext, RequestRecorder, refusal_record
from firebox.serving.registry import ModelHandle
from firebox.serving.response_body import ResponseBuilder, ResponseFrame, echoed_settings
from firebox.serving.response_events import StoredRun, response_events
from firebox.serving.response_items import chat_messages, check_call_outputs, input_items, new_item_id
from firebox.serving.response_store_interface import Order, ResponseStore, page_of
from firebox.serving.response_tools import ResponseTools, resolve_response_tools
from firebox.serving.run import GenerationRun, run_to_end, start_stream
from firebox.serving.service import Completed, Streaming


class ResponseNotFoundError(ServingError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "NOT_FOUND"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id {response_id!r} not found.", param="response_id")


def generation_params(req: ResponseCreateRequest) -> GenerationParams:
    """The chat-style parameters of a responses request (validated as a chat request is)."""
    fields: dict[str, Any] = {name: getattr(req, name) for name in ("model", "stream", *CHAT_FIELDS)}
    fields["max_tokens"] = req.max_output_tokens
    if req.text is not None and req.text.format is not None:
        fields["response_format"] = req.text.format.as_response_format()
    if req.wants_logprobs:
        fields.update(logprobs=True, top_logprobs=req.top_logprobs)
    try:
        return GenerationParams.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(str(first["msg"]).removeprefix("Value error, "), param=param) from exc


def conversation_prompt(
    req: ResponseCreateRequest, engine: EngineClient, items: list[dict[str, Any]], tools: ResponseTools
) -> PreparedPrompt:
    """truncation "auto" drops the oldest items to fit; "disabled" (the default) refuses."""
    max_model_len = engine.model_info.max_model_len
    budget = max_model_len - 1 if req.truncation == "auto" else None
    messages, tool_list = tools.prompt(chat_messages(req.instructions, items), engine.tokenizer.chat_template)
    prompt = chat_prompt(engine.tokenizer, messages, budget, tools=tool_list)
    if len(prompt.token_ids) >= max_model_len:
        raise ContextLengthError(
            f"The input is too long: {len(prompt.token_ids)} tokens, while this model's maximum context length "
            f"is {max_model_len} tokens (input plus at least one output token must fit). Shorten the input or "
            'pass truncation="auto" to drop the oldest items.',
            param="input",
        )
    return prompt


class ResponsesService:
    endpoint = "responses"

    def __init__(self, recorder: RequestRecorder, store: ResponseStore) -> None:
        self._recorder = recorder
        self._store = store

    async def create(
        self, req: ResponseCreateRequest, handle: ModelHandle, ctx: RequestContext
    ) -> Completed | Streaming:
        try:
            params = generation_params(req)
            items = await self._conversation(req, ctx.principal.account_id)
            tools = resolve_response_tools(req, handle.engine.tokenizer.chat_template)
            prompt = conversation_prompt(req, handle.engine, items, tools)
            plan = plan_generation(params, handle, ctx, [prompt], "input", tools.grammar())
        except ServingError as exc:  # refused before the engine: still one record
            record = refusal_record(ctx, handle.model.name, handle.deployment, exc.status_code, req.user, req.metadata)
            self._recorder.emit(record)
            raise
        run = start_run(handle, ctx, plan, self._recorder)
        stored = self._stored_run(req, handle, ctx, plan, run, items, tools)
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
        items: list[dict[str, Any]], tools: ResponseTools,
    ) -> StoredRun:  # fmt: skip
        settings = echoed_settings(req, handle.name, plan.sampling_options)
        frame = ResponseFrame(f"resp_{ctx.request_id}", new_item_id(), ctx.created, settings)
        renderer = ChoiceRenderer(handle.engine.tokenizer, plan.logprobs, plan.choices[0], tools.new_parser())
        builder = ResponseBuilder(frame, run, renderer, bool(req.perf_metrics_in_response), tools.max_calls)
        return StoredRun(builder, self._store if req.wants_store else None, ctx.principal.account_id, items)

    async def _conversation(self, req: ResponseCreateRequest, account_id: str) -> list[dict[str, Any]]:
        """Earlier turns (their input items and outputs), then this request's input."""
        items = input_items(req.input)
        if req.previous_response_id is None:
            check_call_outputs([], items)
            return items
        previous = await self._store.get(account_id, req.previous_response_id)
        history = await self._store.get_input_items(account_id, req.previous_response_id)
        if previous is None or history is None:
            raise InvalidRequestError(
                f"Previous response with id {req.previous_response_id!r} not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if previous["status"] == "in_progress":
            raise InvalidRequestError(
                f"Previous response {req.previous_response_id!r} is still in progress.", param="previous_response_id"
            )
        earlier = [*history, *previous["output"]]
        check_call_outputs(earlier, items)
        return [*earlier, *items]

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
        items = await self._store.get_input_items(principal.account_id, response_id)
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
