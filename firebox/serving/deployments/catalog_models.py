"""The catalog at run time: each model's entry, the engine config of its replicas, and its
description (model info and tokenizer), read once per config and cached."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from firebox.catalog import Catalog, CatalogModel
from firebox.config import EngineConfig, EngineOptions
from firebox.engine.describe import ModelDescription, describe_model
from firebox.serving.registry import ModelRegistry

Describe = Callable[[EngineConfig], ModelDescription]


class CatalogModels:
    def __init__(self, catalog: Catalog, engine_defaults: EngineOptions, registry: ModelRegistry,
                 describe: Describe = describe_model) -> None:
        self.catalog = catalog
        self.registry = registry
        self._defaults = engine_defaults
        self._describe = describe
        self._descriptions: dict[EngineConfig, ModelDescription] = {}
        self._locks: dict[EngineConfig, asyncio.Lock] = {}

    def __iter__(self):
        return iter(self.catalog.models)

    def get(self, name: str) -> CatalogModel | None:
        """The entry of a full or short model name."""
        return self.catalog.get(self.registry.full_name(name.strip()))

    def engine_config(self, model: CatalogModel, max_context_length: int | None = None) -> EngineConfig:
        config = model.engine_config(self._defaults)
        if max_context_length:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, max_model_len=max_context_length))
        return config

    async def description(self, config: EngineConfig) -> ModelDescription:
        """What `config` serves, without its weights: from the shared pool's engine when it runs
        the same model, else read from the model's source (off the event loop)."""
        if (known := self._descriptions.get(config)) is not None:
            return known
        async with self._locks.setdefault(config, asyncio.Lock()):
            if config not in self._descriptions:
                self._descriptions[config] = self._pooled(config) or await asyncio.to_thread(self._describe, config)
        return self._descriptions[config]

    def _pooled(self, config: EngineConfig) -> ModelDescription | None:
        served = self.registry.get(config.model.name)
        entry = self.catalog.get(config.model.name)
        if served is None or entry is None or config != entry.engine_config(self._defaults):
            return None
        return ModelDescription(served.engine.model_info, served.engine.tokenizer)
