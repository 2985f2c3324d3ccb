"""The options a request resolves to once: scheduling tier and tenant from the caller."""

from __future__ import annotations

import time

import pytest

from firebox.protocol.chat import ChatCompletionRequest
from firebox.serving.auth import Principal
from firebox.serving.generation.options import PRIORITY_TIER, resolve_options
from firebox.serving.records import RequestContext
from tests.fakes import FakeEngine


def _options(principal: Principal, **fields):
    engine = FakeEngine()
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})
    ctx = RequestContext("r1", principal, "chat.completions", time.monotonic(), int(time.time()))
    return resolve_options(req, engine.model_info, ctx, tokenizer=engine.tokenizer)


@pytest.mark.parametrize(("is_admin", "priority"), [(True, PRIORITY_TIER), (False, 0)])
def test_the_priority_tier_is_the_operators_only(is_admin: bool, priority: int) -> None:
    options = _options(Principal("acct", "key-1", is_admin=is_admin), service_tier="priority")
    assert options.priority == priority


def test_requests_carry_their_account_as_tenant() -> None:
    assert _options(Principal("acct-7", "key-1")).tenant == "acct-7"
