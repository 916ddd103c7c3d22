"""Waking a model at zero: patch its /scale to max(1, minReplicas) and say why in an Event."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from berth_runtime.gateway.discovery import ModelDeployment
from berth_runtime.gateway.routing import ModelInfo

log = logging.getLogger("berth.gateway.wake")
COMPONENT = "berth-gateway"
REASON = "WokenByGateway"


def wake_replicas(model: ModelInfo) -> int:
    return max(1, model.min_replicas)


class Waker:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def wake(self, model: ModelInfo, waiting: int) -> bool:
        """Scale `model` up from zero; False when it is gone or the write failed."""
        replicas = wake_replicas(model)
        try:
            await self.client.patch(
                ModelDeployment.Scale,
                model.name,
                {"spec": {"replicas": replicas}},
                namespace=model.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            log.warning("waking %s/%s failed: %s", model.namespace, model.name, exc)
            return False
        message = (
            f"woken by the gateway: {waiting} request{'s' if waiting != 1 else ''} waiting; "
            f"scaled from 0 to {replicas}"
        )
        log.info("%s/%s %s", model.namespace, model.name, message)
        await self._event(model, message)
        return True

    async def _event(self, model: ModelInfo, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
        event = Event(
            metadata=ObjectMeta(
                name=f"{model.name}.{uuid.uuid4().hex[:12]}", namespace=model.namespace
            ),
            involvedObject=ObjectReference(
                apiVersion="serving.berth.dev/v1alpha1",
                kind="ModelDeployment",
                name=model.name,
                namespace=model.namespace,
            ),
            reason=REASON,
            message=message,
            type="Normal",
            source=EventSource(component=COMPONENT),
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
            reportingComponent=COMPONENT,
        )
        try:
            await self.client.create(event)
        except ApiError as exc:
            log.warning("Event for %s/%s not posted: %s", model.namespace, model.name, exc)
