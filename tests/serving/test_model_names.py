"""Model names: full and short, and the resolver hook that deployments will use."""

from __future__ import annotations

import pytest

from firebox.serving.errors import ModelNotFoundError
from firebox.serving.registry import ModelHandle, ModelRegistry, split_model_name
from tests.fakes import FakeEngine


def test_full_and_short_names_resolve_to_the_same_model() -> None:
    registry = ModelRegistry()
    engine = FakeEngine()
    registry.add("accounts/fireworks/models/fake-chatml", engine)
    assert registry.resolve("fake-chatml").engine is engine
    assert registry.resolve("accounts/fireworks/models/fake-chatml").name == "accounts/fireworks/models/fake-chatml"


def test_short_names_resolve_only_in_the_default_account() -> None:
    registry = ModelRegistry()
    registry.add("accounts/acme/models/private", FakeEngine())
    with pytest.raises(ModelNotFoundError) as info:
        registry.resolve("private")
    assert info.value.param == "model"
    assert registry.resolve("accounts/acme/models/private").model.account_id == "acme"


def test_short_names_resolve_in_the_callers_account_first() -> None:
    registry = ModelRegistry()
    shared, own = FakeEngine(), FakeEngine(name="accounts/acme/models/fake-chatml")
    registry.add("accounts/fireworks/models/fake-chatml", shared)
    registry.add("accounts/acme/models/fake-chatml", own)
    registry.add("accounts/acme/models/private", FakeEngine())
    assert registry.resolve("fake-chatml", "acme").engine is own
    assert registry.resolve("fake-chatml", "rival").engine is shared  # none of its own: the default account's
    assert registry.resolve("fake-chatml").engine is shared
    assert registry.resolve("private", "acme").name == "accounts/acme/models/private"
    with pytest.raises(ModelNotFoundError):
        registry.resolve("private", "rival")


def test_adding_a_short_name_places_it_in_the_default_account_and_twice_is_an_error() -> None:
    registry = ModelRegistry()
    served = registry.add("tiny", FakeEngine())
    assert served.name == "accounts/fireworks/models/tiny" and served.model_id == "tiny"
    with pytest.raises(ValueError, match="already"):
        registry.add("accounts/fireworks/models/tiny", FakeEngine())
    with pytest.raises(ValueError, match="accounts/<account>/models/<id>"):
        registry.add("accounts/x/deployments/y", FakeEngine())


def test_a_resolver_can_add_deployment_names_without_touching_the_rest() -> None:
    registry = ModelRegistry()
    registry.add("base", FakeEngine())

    class Deployments:
        def resolve(self, name: str, reg: ModelRegistry, account_id: str | None) -> ModelHandle | None:
            model, _, deployment = name.partition("#")
            if not deployment:
                return None
            served = reg.get(model)
            return None if served is None else ModelHandle(name, served, deployment)

    registry.add_resolver(Deployments())
    handle = registry.resolve("accounts/fireworks/models/base#accounts/me/deployments/d1")
    assert handle.deployment == "accounts/me/deployments/d1" and handle.model.name == "accounts/fireworks/models/base"
    assert registry.resolve("base").deployment is None


def test_split_model_name() -> None:
    assert split_model_name("accounts/a/models/b") == ("a", "b")
    for bad in ("b", "accounts/a/models/", "accounts/a/models/b/c", "accounts/a/deployments/b"):
        with pytest.raises(ValueError):
            split_model_name(bad)
