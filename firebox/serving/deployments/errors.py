"""The 503s of deployment-addressed requests."""

from __future__ import annotations

from firebox.serving.errors import ServingError


class DeploymentUnavailableError(ServingError):
    """The deployment cannot serve now (deleted, switched off, or its replicas fail to start)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "UNAVAILABLE"


class DeploymentScalingUpError(DeploymentUnavailableError):
    """No replica became ready within the cold-start timeout; the client may retry."""

    code = "DEPLOYMENT_SCALING_UP"
