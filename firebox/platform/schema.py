"""SQLAlchemy table models of the platform database.

Timestamps are naive UTC `datetime`s on both SQLite and PostgreSQL (one convention, no time-zone
conversion by the driver). Every change to these tables ships as an Alembic migration in
`platform/migrations/versions/`; later issues (deployments, stored responses) add their own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AccountRow(Base):
    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """For all of the account's keys together (revision 0005); `None` = unlimited."""
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UserRow(Base):
    __tablename__ = "users"

    account_id: Mapped[str] = mapped_column(
        String(63), ForeignKey("accounts.account_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    service_account: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(63), index=True)
    user_id: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(128), default="default")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 hex digest of the key; the plain key is never stored."""
    prefix: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(DateTime())
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageRow(Base):
    """One row per request, written by `UsageRecorder`; keys and accounts are plain strings, not
    foreign keys, so that usage outlives a deleted key."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_account_created", "account_id", "created"),)

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(63))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str] = mapped_column(String(256))
    deployment: Mapped[str | None] = mapped_column(String(256), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(64), default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    ttft_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    aborted: Mapped[bool] = mapped_column(Boolean, default=False)
    end_user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime())


class ResponseRow(Base):
    """A stored response of the Responses API: its JSON body and the input items of its own
    request; the earlier turns are those of `previous_response_id`, walked at read time."""

    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_account_seq", "account_id", "seq"),
        Index("ix_responses_previous_response_id", "previous_response_id"),
        Index("ix_responses_created", "created"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Insertion order: lists and their `after` cursors page by it."""
    response_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(String(63))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime())
    updated: Mapped[datetime] = mapped_column(DateTime())
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    holds_history: Mapped[bool] = mapped_column(Boolean, server_default=true())
    """True for rows written before revision 0004: `input_items` hold the whole conversation
    (earlier turns' inputs and outputs), and a walk of the chain stops here."""
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """Deleted by its owner, kept hidden while a later response continues it."""


class DeploymentRow(Base):
    """An on-demand deployment: what was asked for (replica bounds, autoscaling policy) and its
    lifecycle state. Live figures (replicas running, ready) are the replica manager's, not stored."""

    __tablename__ = "deployments"

    account_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(1024), default="")
    min_replica_count: Mapped[int] = mapped_column(Integer, default=0)
    max_replica_count: Mapped[int] = mapped_column(Integer, default=1)
    desired_replica_count: Mapped[int] = mapped_column(Integer, default=0)
    """The replica count the manager works towards; restored after a restart."""
    max_context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    autoscaling_policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The control plane's `autoscalingPolicy` object, camelCase, as normalized at create/patch."""
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[str] = mapped_column(String(32), default="OK")
    status_message: Mapped[str] = mapped_column(String(1024), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime())
    update_time: Mapped[datetime] = mapped_column(DateTime())
    delete_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
