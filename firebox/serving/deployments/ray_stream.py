"""One request's stream from a Ray Serve replica, and what Ray's errors mean to serving.

`RequestStream` is the engine of the `Replica` lease that `RayDeployment.acquire` hands to
`DeploymentRoute`: its `generate` goes on with the stream that `acquire` opened (past the
replica's tag). Leaving it before the end, or `abort`, cancels the stream in Ray, which cancels
the replica's generator and so aborts the request in its engine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import ReplicaUnavailableError, RequestCancelledError

from firebox.engine.types import EngineDeadError, EngineError, EngineRequest, ModelInfo, RequestOutput

logger = logging.getLogger(__name__)

# The replica is gone (killed, crashed, its node lost): its requests end with a 503
REPLICA_LOST = (RayActorError, ActorUnavailableError, ReplicaUnavailableError)


def engine_error(exc: BaseException, replica: str) -> BaseException:
    """What serving should see for a Ray error: the engine's own error when the replica raised
    one (a full queue is a 429, a long prompt a 400), else EngineDeadError (a 503). Clients' errors
    name no process; the log does."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, EngineError | ValueError):
        return exc.cause
    logger.warning("replica %s: %s", replica, exc)
    if isinstance(exc, REPLICA_LOST):
        return EngineDeadError("a replica of the deployment was lost while it ran this request; retry")
    if isinstance(exc, RequestCancelledError):
        return EngineDeadError("the request was cancelled in Ray Serve")
    return EngineDeadError("a replica of the deployment failed while it ran this request")


class RequestStream:
    """The one engine request a lease carries (a `ReplicaEngine` for `DeploymentRoute`)."""

    stats: Any = None

    def __init__(self, model_info: ModelInfo, stream: Any, replica: str) -> None:
        self.model_info = model_info
        self._stream = stream  # a DeploymentResponseGenerator, past the replica's tag
        self._replica = replica
        self._ended = False

    @property
    def is_alive(self) -> bool:
        return not self._ended

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        try:
            async for output in self._stream:
                self._ended = output.finished
                yield output
        except Exception as exc:
            self._ended = True
            raise engine_error(exc, self._replica) from None
        finally:
            if not self._ended:
                self._stream.cancel()
                self._ended = True

    async def abort(self, request_id: str) -> None:
        if not self._ended:
            self._stream.cancel()
