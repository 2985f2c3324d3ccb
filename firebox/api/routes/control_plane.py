"""Control plane on Fireworks' paths: accounts, users and API keys (camelCase, `name` = full path).

Mount with `app.include_router(control_plane_router(...))` and no prefix: the paths start at `/v1`.
A key of account A may only touch account A; admin keys may touch any account.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from firebox.api.routes.platform_common import PlatformRoute, paginate, principal_dependency
from firebox.platform.accounts import MAX_RATE_LIMIT, Account, AccountStore, User, user_id_from_email
from firebox.platform.auth import Authenticator, Principal
from firebox.platform.errors import InvalidArgumentError, PermissionDeniedError
from firebox.platform.keys import ApiKey, KeyStore
from firebox.platform.times import format_time, parse_time

_OK = {"code": "OK", "message": ""}


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


AccountRateLimit = Annotated[int | None, Field(strict=True, ge=1, le=MAX_RATE_LIMIT)]
"""An account's limit (null: unlimited); strict, so that "5", 5.0 and true are 400s, not coerced."""


class AccountLimitsBody(_CamelModel):
    """The body of `PATCH /v1/accounts/{account}`. A field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")  # a field this PATCH cannot set is a 400, not ignored
    requests_per_minute: AccountRateLimit = None
    """firebox extension: requests per minute for all of the account's keys together."""
    tokens_per_minute: AccountRateLimit = None
    """firebox extension: tokens per minute for all of the account's keys together."""


class CreateAccountBody(_CamelModel):
    account_id: str | None = None
    display_name: str = ""
    email: str = ""
    requests_per_minute: AccountRateLimit = None
    tokens_per_minute: AccountRateLimit = None


class UserBody(_CamelModel):
    role: str | None = None
    display_name: str | None = None
    email: str | None = None
    service_account: bool | None = None


class ApiKeyFields(_CamelModel):
    display_name: str = "default"
    expire_time: str | None = None
    requests_per_minute: int | None = Field(default=None, ge=1)
    """firebox extension: the key's request limit per minute (unset: unlimited)."""
    tokens_per_minute: int | None = Field(default=None, ge=1)
    """firebox extension: the key's token limit per minute (unset: unlimited)."""


class CreateApiKeyBody(_CamelModel):
    api_key: ApiKeyFields = Field(default_factory=ApiKeyFields)


class DeleteApiKeyBody(_CamelModel):
    key_id: str


def _time(value: Any) -> str | None:
    return None if value is None else format_time(value, "microseconds")


def account_json(account: Account) -> dict[str, Any]:
    return {"name": f"accounts/{account.account_id}", "displayName": account.display_name,
            "email": account.email, "state": "READY", "status": _OK, "suspendState": "UNSUSPENDED",
            "createTime": _time(account.create_time), "updateTime": _time(account.update_time),
            "requestsPerMinute": account.requests_per_minute, "tokensPerMinute": account.tokens_per_minute}


def user_json(user: User) -> dict[str, Any]:
    return {"name": f"accounts/{user.account_id}/users/{user.user_id}", "role": user.role,
            "displayName": user.display_name, "email": user.email, "serviceAccount": user.service_account,
            "state": "READY", "status": _OK, "createTime": _time(user.create_time),
            "updateTime": _time(user.update_time)}


def api_key_json(api_key: ApiKey, key: str | None = None) -> dict[str, Any]:
    body = {"name": f"accounts/{api_key.account_id}/users/{api_key.user_id}/apiKeys/{api_key.key_id}",
            "keyId": api_key.key_id, "displayName": api_key.display_name, "prefix": api_key.prefix,
            "secure": True, "createTime": _time(api_key.create_time), "expireTime": _time(api_key.expire_time),
            "requestsPerMinute": api_key.requests_per_minute, "tokensPerMinute": api_key.tokens_per_minute}
    if key is not None:
        body["key"] = key
    return body


def _capped_limit(name: str, requested: int | None, own: int | None) -> int | None:
    """A new key's limit when the caller's key has `own`: at most that (and that when unset), so a
    rate-limited key cannot escape its limit by minting a looser key. A key without a limit (an
    admin key, an unlimited key) may set any."""
    if own is None:
        return requested
    if requested is not None and requested > own:
        raise PermissionDeniedError(f"{name} may not exceed the calling key's own limit ({own})")
    return own if requested is None else requested


def _check_account_limit_change(name: str, requested: int | None, current: int | None) -> None:
    """An account admin may tighten its account's limit but not loosen or remove it: the limit caps
    all of the account's keys together, so that an admin could lift it would make it no cap. The
    operator's keys may set any."""
    if current is not None and (requested is None or requested > current):
        raise PermissionDeniedError(
            f"only the server's admin key may raise or remove the account's {name} (now {current})"
        )


def _capped_expiry(requested: datetime | None, own: datetime | None) -> datetime | None:
    """A new key's expiry when the caller's key expires at `own`: no later (and that when unset),
    so an expiring key cannot mint a permanent one."""
    if own is None:
        return requested
    if requested is not None and requested > own:
        raise PermissionDeniedError(f"expireTime may not be later than the calling key's own ({format_time(own)})")
    return own if requested is None else requested


def _page(plural: str, items: list[dict[str, Any]], page_size: int | None,
          page_token: str | None) -> dict[str, Any]:
    page, next_token = paginate(items, page_size, page_token)
    return {plural: page, "nextPageToken": next_token, "totalSize": len(items)}


class _ControlPlane:
    """The handlers; sync methods, so FastAPI runs their database calls in its thread pool."""

    def __init__(self, accounts: AccountStore, keys: KeyStore, authenticator: Authenticator) -> None:
        self.accounts, self.keys, self.authenticator = accounts, keys, authenticator

    def list_accounts(self, principal: Principal, page_size: int | None, page_token: str | None):
        if principal.is_admin:
            visible = self.accounts.list_accounts()
        else:
            visible = [self.accounts.get_account(principal.account_id)]
        return _page("accounts", [account_json(a) for a in visible], page_size, page_token)

    def get_account(self, principal: Principal, account_id: str):
        principal.require_access(account_id)
        return account_json(self.accounts.get_account(account_id))

    def create_account(self, principal: Principal, body: CreateAccountBody, account_id: str | None):
        if not principal.is_admin:
            raise PermissionDeniedError("only an admin key may create accounts")
        account_id = body.account_id or account_id or (user_id_from_email(body.email) if body.email else None)
        if not account_id:
            raise InvalidArgumentError("accountId is required")
        created = self.accounts.create_account(account_id, body.display_name, body.email,
                                               requests_per_minute=body.requests_per_minute,
                                               tokens_per_minute=body.tokens_per_minute)
        return account_json(created)

    def update_account_limits(self, principal: Principal, account_id: str, body: AccountLimitsBody):
        principal.require_account_admin(account_id, "change its rate limits")
        limits = {name: getattr(body, name) for name in body.model_fields_set}
        if not limits:
            raise InvalidArgumentError("set requestsPerMinute or tokensPerMinute (null: unlimited)")
        if not principal.is_admin:
            current = self.accounts.get_account(account_id)
            for name, value in limits.items():
                _check_account_limit_change(to_camel(name), value, getattr(current, name))
        updated = self.accounts.set_rate_limits(account_id, **limits)
        self._keys_changed()  # cached principals carry the account's limits
        return account_json(updated)

    def create_user(self, principal: Principal, account_id: str, body: UserBody, user_id: str | None):
        principal.require_account_admin(account_id, "create users")
        if not body.role:
            raise InvalidArgumentError("role is required")
        user = self.accounts.create_user(account_id, role=body.role, user_id=user_id,
                                         display_name=body.display_name or "", email=body.email or "",
                                         service_account=bool(body.service_account))
        return user_json(user)

    def list_users(self, principal: Principal, account_id: str, page_size: int | None, page_token: str | None):
        principal.require_access(account_id)
        users = [user_json(u) for u in self.accounts.list_users(account_id)]
        return _page("users", users, page_size, page_token)

    def get_user(self, principal: Principal, account_id: str, user_id: str):
        principal.require_access(account_id)
        return user_json(self.accounts.get_user(account_id, user_id))

    def update_user(self, principal: Principal, account_id: str, user_id: str, body: UserBody):
        principal.require_account_admin(account_id, "change users")
        fields = body.model_dump(exclude_none=True)
        updated = self.accounts.update_user(account_id, user_id, **fields)
        self._keys_changed()  # cached principals carry the role
        return user_json(updated)

    def create_key(self, principal: Principal, account_id: str, user_id: str, body: CreateApiKeyBody):
        principal.require_self_or_account_admin(account_id, user_id, "create its API keys")
        fields = body.api_key
        rpm = _capped_limit("requestsPerMinute", fields.requests_per_minute, principal.requests_per_minute)
        tpm = _capped_limit("tokensPerMinute", fields.tokens_per_minute, principal.tokens_per_minute)
        created = self.keys.create(account_id, user_id, display_name=fields.display_name,
                                   expire_time=_capped_expiry(parse_time(fields.expire_time), principal.expire_time),
                                   requests_per_minute=rpm, tokens_per_minute=tpm)
        self._keys_changed()
        return api_key_json(created.api_key, created.key)

    def list_keys(self, principal: Principal, account_id: str, user_id: str, page_size: int | None,
                  page_token: str | None):
        principal.require_self_or_account_admin(account_id, user_id, "list its API keys")
        self.accounts.get_user(account_id, user_id)
        keys = [api_key_json(k) for k in self.keys.list(account_id, user_id)]
        return _page("apiKeys", keys, page_size, page_token)

    def delete_key(self, principal: Principal, account_id: str, user_id: str, body: DeleteApiKeyBody):
        principal.require_self_or_account_admin(account_id, user_id, "delete its API keys")
        self.keys.delete(account_id, body.key_id, user_id=user_id)
        self._keys_changed()
        return {}

    def _keys_changed(self) -> None:
        invalidate = getattr(self.authenticator, "invalidate", None)
        if invalidate is not None:
            invalidate()


def control_plane_router(accounts: AccountStore, keys: KeyStore, authenticator: Authenticator) -> APIRouter:
    """Routes under `/v1/accounts`; `authenticator` resolves the bearer key of each request."""
    plane = _ControlPlane(accounts, keys, authenticator)
    router = APIRouter(route_class=PlatformRoute, tags=["control plane"])
    caller = Depends(principal_dependency(authenticator, refuse_open=True))
    _account_routes(router, plane, caller)
    _user_routes(router, plane, caller)
    _key_routes(router, plane, caller)
    return router


_ACCOUNT = "/v1/accounts/{account_id}"
_PAGE_SIZE = Query(default=None, alias="pageSize")
_PAGE_TOKEN = Query(default=None, alias="pageToken")


def _account_routes(router: APIRouter, plane: _ControlPlane, caller: Any) -> None:
    @router.get("/v1/accounts")
    def list_accounts(principal: Principal = caller, size: int | None = _PAGE_SIZE,
                      token: str | None = _PAGE_TOKEN):
        return plane.list_accounts(principal, size, token)

    @router.post("/v1/accounts")
    def create_account(body: CreateAccountBody, principal: Principal = caller,
                       account_id: str | None = Query(default=None, alias="accountId")):
        return plane.create_account(principal, body, account_id)

    @router.get(_ACCOUNT)
    def get_account(account_id: str, principal: Principal = caller):
        return plane.get_account(principal, account_id)

    @router.patch(_ACCOUNT)
    def update_account_limits(account_id: str, body: AccountLimitsBody, principal: Principal = caller):
        return plane.update_account_limits(principal, account_id, body)


def _user_routes(router: APIRouter, plane: _ControlPlane, caller: Any) -> None:
    @router.post(f"{_ACCOUNT}/users")
    def create_user(account_id: str, body: UserBody, principal: Principal = caller,
                    user_id: str | None = Query(default=None, alias="userId")):
        return plane.create_user(principal, account_id, body, user_id)

    @router.get(f"{_ACCOUNT}/users")
    def list_users(account_id: str, principal: Principal = caller, size: int | None = _PAGE_SIZE,
                   token: str | None = _PAGE_TOKEN):
        return plane.list_users(principal, account_id, size, token)

    @router.get(f"{_ACCOUNT}/users/{{user_id}}")
    def get_user(account_id: str, user_id: str, principal: Principal = caller):
        return plane.get_user(principal, account_id, user_id)

    @router.patch(f"{_ACCOUNT}/users/{{user_id}}")
    def update_user(account_id: str, user_id: str, body: UserBody, principal: Principal = caller):
        return plane.update_user(principal, account_id, user_id, body)


def _key_routes(router: APIRouter, plane: _ControlPlane, caller: Any) -> None:
    keys_path = f"{_ACCOUNT}/users/{{user_id}}/apiKeys"

    @router.post(keys_path)
    def create_key(account_id: str, user_id: str, principal: Principal = caller,
                   body: CreateApiKeyBody = Body(default_factory=CreateApiKeyBody)):
        return plane.create_key(principal, account_id, user_id, body)

    @router.get(keys_path)
    def list_keys(account_id: str, user_id: str, principal: Principal = caller, size: int | None = _PAGE_SIZE,
                  token: str | None = _PAGE_TOKEN):
        return plane.list_keys(principal, account_id, user_id, size, token)

    @router.post(f"{keys_path}:delete")
    def delete_key(account_id: str, user_id: str, body: DeleteApiKeyBody, principal: Principal = caller):
        return plane.delete_key(principal, account_id, user_id, body)
