"""`/models`: what the registry serves, in OpenAI's list shape with the context length."""

from __future__ import annotations

from firebox.protocol.models import ModelCard, ModelList
from firebox.serving.registry import ModelRegistry, ServedModel


def model_card(served: ServedModel) -> ModelCard:
    return ModelCard(
        id=served.name,
        created=served.created,
        owned_by=served.account_id,
        context_length=served.engine.model_info.max_model_len,
    )


def list_models(registry: ModelRegistry) -> ModelList:
    return ModelList(data=[model_card(served) for served in registry])


def get_model(registry: ModelRegistry, name: str) -> ModelCard:
    """The card of a full or short model name, or of what a deployment name resolves to."""
    return model_card(registry.resolve(name).model)
