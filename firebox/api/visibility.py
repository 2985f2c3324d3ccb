"""Which model names a caller may see, for the routes that answer without requiring a key
(`/health`, `/metrics`): public models for everyone, an account's private models only for its own
keys and admins, so that nobody learns another account's model names by asking."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from firebox.api.deps import app_state, bearer_token, may_use
from firebox.api.state import AppState
from firebox.names import split_deployment_name, split_model_name
from firebox.serving.auth import Principal


async def optional_principal(state: AppState, request: Request) -> Principal | None:
    """The caller's principal, or None for no key or a key that is not valid (never a 401)."""
    return await state.authenticator.authenticate(bearer_token(request))


def model_visibility(state: AppState, principal: Principal | None) -> Callable[[str], bool]:
    """A test of model names (`accounts/<a>/models/<m>`, or with `#<deployment>`) for `principal`."""

    def is_visible(name: str) -> bool:
        model_name, _, deployment = name.partition("#")
        if deployment and not _may_see_deployment(principal, deployment):
            return False
        try:
            account_id, _ = split_model_name(model_name)
        except ValueError:
            return principal is not None and principal.is_admin
        served = state.registry.get(model_name)
        return may_use(principal, account_id, served.is_public if served is not None else None)

    return is_visible


def _may_see_deployment(principal: Principal | None, deployment: str) -> bool:
    """Deployments are private to their account (`accounts/<a>/deployments/<id>`)."""
    owner = split_deployment_name(deployment)
    return owner is not None and may_use(principal, owner[0], is_public=False)


async def visible_model_names(request: Request) -> Callable[[str], bool] | None:
    """The caller's test of model names; None where every name may be shown (an admin, or an app
    without the inference state, as the platform's own tests mount the routers)."""
    state: AppState | None = getattr(request.app.state, "firebox", None)
    if state is None:
        return None
    principal = await optional_principal(state, request)
    if principal is not None and principal.is_admin:
        return None
    return model_visibility(state, principal)
