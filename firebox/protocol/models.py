"""`GET /v1/models` and `GET /v1/models/{id}`: OpenAI's list shape plus the context length."""

from __future__ import annotations

from typing import Literal

from firebox.protocol.common import ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    context_length: int


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
