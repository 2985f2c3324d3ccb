"""The static key authenticator."""

from __future__ import annotations

import asyncio

from firebox.serving.auth import StaticKeyAuthenticator, key_id_of


def test_open_access_without_keys() -> None:
    auth = StaticKeyAuthenticator()
    assert auth.is_open()
    for token in (None, "", "anything"):
        principal = asyncio.run(auth.authenticate(token))
        assert principal is not None and principal.account_id == "fireworks" and principal.key_id is None


def test_keys_are_checked() -> None:
    auth = StaticKeyAuthenticator(["k1", "k2"])
    assert not auth.is_open()
    assert asyncio.run(auth.authenticate(None)) is None
    assert asyncio.run(auth.authenticate("k3")) is None
    principal = asyncio.run(auth.authenticate("k2"))
    assert principal is not None and principal.key_id == key_id_of("k2") and "k2" not in principal.key_id
