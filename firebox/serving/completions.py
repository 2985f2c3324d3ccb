"""Completions: raw prompts (text or token ids, one or several) -> engine, outputs -> `text_completion`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from firebox.engine.types import EngineClient
from firebox.protocol.completions import CompletionChoice, CompletionChunk, CompletionRequest, CompletionResponse
from firebox.serving.generation.output import ChoiceRenderer, Delta
from firebox.serving.prompt import text_prompt, token_prompt, truncation_budget
from firebox.serving.reasoning import resolve_thinking
from firebox.serving.generation.run import GenerationRun
from firebox.serving.generation.service import GenerationService, PreparedRequest


def split_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """One entry per prompt: a string, or a list of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if all(isinstance(p, int) for p in prompt):
        return [prompt]  # type: ignore[list-item]
    return list(prompt)  # type: ignore[arg-type]


class CompletionService(GenerationService[CompletionRequest]):
    endpoint = "completions"
    prompt_param = "prompt"

    def prepare(self, req: CompletionRequest, engine: EngineClient) -> PreparedRequest:
        resolve_thinking(req, chat_template=None)  # a raw prompt: thinking cannot be turned on or off
        budget = truncation_budget(req.context_length_exceeded_behavior, engine.model_info.max_model_len)
        tok = engine.tokenizer
        return PreparedRequest(
            [
                text_prompt(tok, p, budget) if isinstance(p, str) else token_prompt(tok, p, budget)
                for p in split_prompts(req.prompt)
            ]
        )

    def response(
        self, req: CompletionRequest, run: GenerationRun, renderers: Sequence[ChoiceRenderer]
    ) -> CompletionResponse:
        ctx = run.info.ctx
        choices = [
            CompletionChoice(text=r.text, prompt_token_ids=self._prompt_ids(req, r), **r.choice_fields(req))
            for r in renderers
        ]
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}",
            created=ctx.created,
            model=run.info.handle.name,
            choices=choices,
            usage=run.usage(),
            perf_metrics=run.perf_metrics() if req.perf_metrics_in_response else None,
        )

    def chunk(self, run: GenerationRun, choices: list[Any], **extra: Any) -> CompletionChunk:
        ctx = run.info.ctx
        return CompletionChunk(
            id=f"cmpl-{ctx.request_id}", created=ctx.created, model=run.info.handle.name, choices=choices, **extra
        )

    def opening_choice(
        self, req: CompletionRequest, renderer: ChoiceRenderer
    ) -> tuple[CompletionChoice, dict[str, Any]] | None:
        """The echoed prompt and the prompt ids open a choice, when asked for."""
        choice = renderer.choice
        if not (choice.echo_count or req.return_token_ids):
            return None
        text, logprobs = choice.echo_text, renderer.echo_logprobs()
        opening = CompletionChoice(
            index=choice.index, text=text, logprobs=logprobs, prompt_token_ids=self._prompt_ids(req, renderer)
        )
        return opening, {}

    def delta_choice(self, req: CompletionRequest, delta: Delta) -> CompletionChoice:
        return CompletionChoice(text=delta.output.text_delta, **delta.choice_fields(req))

    @staticmethod
    def _prompt_ids(req: CompletionRequest, r: ChoiceRenderer) -> list[int] | None:
        return r.choice.prompt.token_ids if req.return_token_ids else None
