"""What the routes share, kept on `app.state.firebox` (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from firebox.serving.auth import Authenticator
from firebox.serving.chat import ChatService
from firebox.serving.completions import CompletionService
from firebox.serving.messages.service import MessagesService
from firebox.serving.records import RequestRecorder
from firebox.serving.registry import ModelRegistry
from firebox.serving.responses.service import ResponsesService


@dataclass
class Lifecycle:
    """Set to draining on shutdown: new requests get 503 while running ones finish."""

    is_draining: bool = False


class RateLimiter(Protocol):
    """Request/token limits per key and per account (the platform's `RateLimiter`)."""

    def check(self, principal: Any) -> Any:
        """A decision with `allowed`, `retry_after` (seconds), `headers` (x-ratelimit-*) and
        `message` (why it was refused: the key's limit or the account's)."""
        ...


@dataclass
class AppState:
    registry: ModelRegistry
    authenticator: Authenticator
    chat: ChatService
    completions: CompletionService
    messages: MessagesService
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    rate_limiter: RateLimiter | None = None
    responses: ResponsesService | None = None
    recorder: RequestRecorder | None = None  # for the requests refused before a service sees them
