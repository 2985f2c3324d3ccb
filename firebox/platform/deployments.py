"""Deployments in the platform database: what each one asks for and where its lifecycle stands.

The store keeps the declared state only (replica bounds, desired count, autoscaling policy,
CREATING/READY/.../DELETED); the replica manager owns the live figures. Soft delete sets
`delete_time` and the DELETED state, and undelete reverses it; hard delete removes the row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from firebox.platform.accounts import validate_resource_id
from firebox.platform.db import Database
from firebox.platform.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from firebox.platform.schema import DeploymentRow
from firebox.platform.times import utcnow

STATES = ("CREATING", "READY", "UPDATING", "DELETING", "DELETED", "FAILED")
DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Deployment:
    account_id: str
    deployment_id: str
    base_model: str
    display_name: str = ""
    description: str = ""
    min_replica_count: int = 0
    max_replica_count: int = 1
    desired_replica_count: int = 0
    max_context_length: int | None = None
    autoscaling_policy: dict[str, Any] = field(default_factory=dict)
    state: str = "CREATING"
    status_code: str = "OK"
    status_message: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    delete_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"accounts/{self.account_id}/deployments/{self.deployment_id}"

    @property
    def is_deleted(self) -> bool:
        return self.state == DELETED


_FIELDS = tuple(c for c in Deployment.__dataclass_fields__)
_MUTABLE = frozenset(_FIELDS) - {"account_id", "deployment_id", "create_time"}


def _deployment(row: DeploymentRow) -> Deployment:
    return Deployment(**{name: getattr(row, name) for name in _FIELDS})


class DeploymentStore:
    """Synchronous: call it off the event loop."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def create(self, deployment: Deployment) -> Deployment:
        """Insert `deployment` (a random id when its id is empty); AlreadyExistsError if taken."""
        deployment_id = deployment.deployment_id or secrets.token_hex(4)
        validate_resource_id("deployment", deployment_id)
        _check_state(deployment.state)
        now = utcnow()
        values = {name: getattr(deployment, name) for name in _FIELDS}
        values.update(deployment_id=deployment_id, create_time=now, update_time=now, delete_time=None)
        with self._db.session() as session:
            if session.get(DeploymentRow, (deployment.account_id, deployment_id)) is not None:
                raise AlreadyExistsError(f"deployment {deployment.account_id}/{deployment_id} already exists")
            row = DeploymentRow(**values)
            session.add(row)
        return _deployment(row)

    def get(self, account_id: str, deployment_id: str) -> Deployment:
        with self._db.session() as session:
            return _deployment(self._row(session, account_id, deployment_id))

    def list(self, account_id: str | None = None, show_deleted: bool = False) -> list[Deployment]:
        """Oldest first; every account's when `account_id` is None."""
        query = select(DeploymentRow).order_by(DeploymentRow.create_time, DeploymentRow.deployment_id)
        if account_id is not None:
            query = query.where(DeploymentRow.account_id == account_id)
        if not show_deleted:
            query = query.where(DeploymentRow.state != DELETED)
        with self._db.session() as session:
            return [_deployment(row) for row in session.scalars(query)]

    def update(self, account_id: str, deployment_id: str, **fields: Any) -> Deployment:
        unknown = set(fields) - _MUTABLE
        if unknown:
            raise InvalidArgumentError(f"cannot update deployment field(s) {sorted(unknown)}")
        if "state" in fields:
            _check_state(fields["state"])
        with self._db.session() as session:
            row = self._row(session, account_id, deployment_id)
            for name, value in fields.items():
                setattr(row, name, value)
            row.update_time = utcnow()
            return _deployment(row)

    def soft_delete(self, account_id: str, deployment_id: str) -> Deployment:
        now = utcnow()
        return self.update(account_id, deployment_id, state=DELETED, delete_time=now, desired_replica_count=0)

    def undelete(self, account_id: str, deployment_id: str, state: str) -> Deployment:
        if not self.get(account_id, deployment_id).is_deleted:
            raise InvalidArgumentError(f"deployment {account_id}/{deployment_id} is not deleted")
        return self.update(account_id, deployment_id, state=state, delete_time=None)

    def hard_delete(self, account_id: str, deployment_id: str) -> None:
        with self._db.session() as session:
            session.delete(self._row(session, account_id, deployment_id))

    @staticmethod
    def _row(session: Any, account_id: str, deployment_id: str) -> DeploymentRow:
        row = session.get(DeploymentRow, (account_id, deployment_id))
        if row is None:
            raise NotFoundError(f"deployment accounts/{account_id}/deployments/{deployment_id} not found")
        return row


def _check_state(state: str) -> None:
    if state not in STATES:
        raise InvalidArgumentError(f"unknown deployment state {state!r}")
