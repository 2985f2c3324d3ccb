"""`/models`: what the registry serves, in OpenAI's list shape with the context length."""

from __future__ import annotations

from collections.abc import Callable

from firebox.protocol.models import ModelCard, ModelList
from firebox.serving.registry import ModelHandle, ModelRegistry, ServedModel


def model_card(served: ServedModel) -> ModelCard:
    return ModelCard(
        id=served.name,
        created=served.created,
        owned_by=served.account_id,
        context_length=served.engine.model_info.max_model_len,
    )


def list_models(registry: ModelRegistry, visible: Callable[[str, bool], bool]) -> ModelList:
    """The models that `visible(account, is_public)` accepts."""
    return ModelList(data=[model_card(served) for served in registry if visible(served.account_id, served.is_public)])


def get_model(handle: ModelHandle) -> ModelCard:
    """The card of what a (model or deployment) name resolved to."""
    return model_card(handle.model)
