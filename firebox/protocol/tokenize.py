"""`POST /tokenize` and `POST /detokenize`, shaped as vLLM shapes them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from firebox.protocol.chat import ChatMessage
from firebox.protocol.common import RequestModel, ResponseModel


class TokenizeRequest(RequestModel):
    """Exactly one of `prompt` (raw text) and `messages` (rendered with the chat template)."""

    model: str
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        return self


class TokenizeResponse(ResponseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(RequestModel):
    model: str
    tokens: list[Annotated[int, Field(ge=0)]]


class DetokenizeResponse(ResponseModel):
    prompt: str
