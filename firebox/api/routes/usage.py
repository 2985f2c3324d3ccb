"""`GET /v1/accounts/{account_id}/usage`: token and request totals and latency percentiles per
time bucket, optionally grouped by model, key or deployment (DESIGN.md's usage-API contract)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from firebox.api.routes.platform_common import PlatformRoute, principal_dependency
from firebox.platform.accounts import AccountStore
from firebox.platform.auth import Authenticator, Principal
from firebox.platform.usage_query import UsageQuery, UsageWindow


def usage_router(usage_query: UsageQuery, accounts: AccountStore, authenticator: Authenticator) -> APIRouter:
    """Mount with no prefix; a key may read only its own account's usage (admin keys any)."""
    router = APIRouter(route_class=PlatformRoute, tags=["usage"])
    caller = Depends(principal_dependency(authenticator))

    def aggregate(account_id: str, window: UsageWindow) -> dict[str, Any]:
        accounts.get_account(account_id)
        return {"data": usage_query.aggregate(account_id, window)}

    @router.get("/v1/accounts/{account_id}/usage")
    async def get_usage(account_id: str, start: str | None = None, end: str | None = None,
                        granularity: str | None = None, group_by: str | None = None,
                        principal: Principal = caller) -> dict[str, Any]:
        principal.require_access(account_id)
        window = UsageWindow.parse(start, end, granularity, group_by)
        return await run_in_threadpool(aggregate, account_id, window)

    return router
