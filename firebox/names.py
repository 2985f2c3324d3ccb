"""Model and deployment names as the hosted API spells them (no dependencies: the command line
validates names before anything heavy is imported)."""

from __future__ import annotations

import re

_FULL_NAME = re.compile(r"accounts/(?P<account>[^/#]+)/models/(?P<model_id>[^/#]+)")
_DEPLOYMENT_NAME = re.compile(r"accounts/(?P<account>[^/#]+)/deployments/(?P<deployment_id>[^/#]+)")


def split_model_name(name: str) -> tuple[str, str]:
    """(account, model id) of a full model name; ValueError for anything else."""
    match = _FULL_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"model names look like accounts/<account>/models/<id>, got {name!r}")
    return match["account"], match["model_id"]


def split_deployment_name(name: str) -> tuple[str, str] | None:
    """(account, deployment id) of `accounts/<account>/deployments/<id>`; None for anything else."""
    match = _DEPLOYMENT_NAME.fullmatch(name)
    return None if match is None else (match["account"], match["deployment_id"])
