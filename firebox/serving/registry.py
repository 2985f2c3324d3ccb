"""Served models by name, and the resolve step from a request's `model` string to an engine.

Names are `accounts/<account>/models/<id>`; a bare `<id>` resolves in the caller's account first,
then in the default account. Deployment names (`accounts/<a>/deployments/<id>`,
`<model>#<deployment>`) are resolved by the `NameResolver` that `serving/deployments/names.py`
registers with `add_resolver`; the routes only ever call `resolve`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from firebox.config import DEFAULT_ACCOUNT
from firebox.engine.types import EngineClient
from firebox.names import split_deployment_name, split_model_name
from firebox.serving.errors import ModelNotFoundError


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str  # accounts/<account>/models/<id>
    engine: EngineClient
    created: int = field(default_factory=lambda: int(time.time()))
    public: bool | None = None  # usable by every account; None: only in the default account

    @property
    def account_id(self) -> str:
        return split_model_name(self.name)[0]

    @property
    def is_public(self) -> bool:
        return self.account_id == DEFAULT_ACCOUNT if self.public is None else self.public

    @property
    def model_id(self) -> str:
        return split_model_name(self.name)[1]


@dataclass(frozen=True, slots=True)
class ModelHandle:
    """What one request addresses: a served model, possibly through a deployment."""

    name: str  # the name responses carry in `model`
    model: ServedModel
    deployment: str | None = None  # accounts/<a>/deployments/<id>
    route_metrics: Callable[[], dict[str, Any]] | None = None  # perf metrics of the route (replica, cold start)

    @property
    def engine(self) -> EngineClient:
        return self.model.engine

    @property
    def account_id(self) -> str:
        """The account whose keys may use it: the deployment's, else the model's."""
        owner = split_deployment_name(self.deployment) if self.deployment else None
        return owner[0] if owner else self.model.account_id

    @property
    def is_public(self) -> bool:
        """Deployments are private to their account; models may be public."""
        return self.deployment is None and self.model.is_public


class NameResolver(Protocol):
    """Maps a `model` string to a handle; None when the string is not of its kind. `account_id`:
    the caller's account, where short names look first (None: the default account only)."""

    def resolve(self, name: str, registry: ModelRegistry, account_id: str | None) -> ModelHandle | None: ...


class ModelRegistry:
    def __init__(self, default_account: str = DEFAULT_ACCOUNT) -> None:
        self.default_account = default_account
        self._models: dict[str, ServedModel] = {}
        self._resolvers: list[NameResolver] = []

    def add(self, name: str, engine: EngineClient, public: bool | None = None) -> ServedModel:
        full_name = self.full_name(name)
        split_model_name(full_name)  # validates
        if full_name in self._models:
            raise ValueError(f"model {full_name!r} is already served")
        served = ServedModel(full_name, engine, public=public)
        self._models[full_name] = served
        return served

    def add_resolver(self, resolver: NameResolver) -> None:
        """Resolvers are asked in order before the plain model names."""
        self._resolvers.append(resolver)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def full_name(self, name: str) -> str:
        """`<id>` -> `accounts/<default account>/models/<id>`; full names unchanged."""
        return name if "/" in name else f"accounts/{self.default_account}/models/{name}"

    def full_names(self, name: str, account_id: str | None = None) -> list[str]:
        """Where `name` may live, in the order to look: a full name is itself; a short one is in
        `account_id` (the caller's), then in the default account."""
        name = name.strip()
        if "/" in name:
            return [name]
        accounts = dict.fromkeys(a for a in (account_id, self.default_account) if a is not None)
        return [f"accounts/{account}/models/{name}" for account in accounts]

    def get(self, name: str, account_id: str | None = None) -> ServedModel | None:
        """The served model of a full or short name (no deployments); a short name in
        `account_id` first, then in the default account."""
        return next((m for n in self.full_names(name, account_id) if (m := self._models.get(n)) is not None), None)

    def resolve(self, name: str, account_id: str | None = None) -> ModelHandle:
        """The handle of `name` for a caller of `account_id`."""
        for resolver in self._resolvers:
            handle = resolver.resolve(name, self, account_id)
            if handle is not None:
                return handle
        served = self.get(name, account_id)
        if served is None:
            raise ModelNotFoundError(name)
        return ModelHandle(served.name, served)
