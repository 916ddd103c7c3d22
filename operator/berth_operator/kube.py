"""Thin Kubernetes client layer: server-side apply, delete, status patch (lightkube).

Only generic resources are used, so no large model classes are imported. Every write
raises `ApplyError` on failure; a missing object on delete is not a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from berth_operator import builders
from berth_operator.errors import ApplyError, NamespaceTerminating

# (apiVersion, kind) -> lightkube generic resource class
_RESOURCES: dict[tuple[str, str], Any] = {
    ("apps/v1", "Deployment"): create_namespaced_resource(
        "apps", "v1", "Deployment", "deployments"
    ),
    ("v1", "Service"): create_namespaced_resource("", "v1", "Service", "services"),
    ("networking.k8s.io/v1", "NetworkPolicy"): create_namespaced_resource(
        "networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"
    ),
    ("policy/v1", "PodDisruptionBudget"): create_namespaced_resource(
        "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): create_namespaced_resource(
        "monitoring.coreos.com", "v1", "PodMonitor", "podmonitors"
    ),
    (builders.API_VERSION, builders.KIND): create_namespaced_resource(
        builders.GROUP, builders.VERSION, builders.KIND, builders.PLURAL
    ),
}
POLICY = create_global_resource(
    builders.GROUP, builders.VERSION, "ScalingPolicy", "scalingpolicies"
)
_CRD = create_global_resource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions"
)


def _resource(api_version: str, kind: str) -> Any:
    try:
        return _RESOURCES[(api_version, kind)]
    except KeyError:
        raise ApplyError(f"no client resource for {api_version} {kind}") from None


def _plain(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


class Kube:
    """The few calls the operator makes, on one shared connection pool."""

    def __init__(
        self,
        field_manager: str,
        client: AsyncClient | None = None,
        timeout: float = 30,
        max_in_flight: int = 16,
    ) -> None:
        self.field_manager = field_manager
        # Bounded writes: 500 models created at once must not become 1000 concurrent
        # requests; a small queue here keeps the API server (and its ClusterIP
        # allocator) at full throughput instead of timing out.
        self._writes = asyncio.Semaphore(max_in_flight)
        self._client = client or AsyncClient(
            field_manager=field_manager, timeout=httpx2.Timeout(timeout)
        )

    async def close(self) -> None:
        await self._client.close()

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (force: the operator owns these fields)."""
        meta = manifest["metadata"]
        res = _resource(manifest["apiVersion"], manifest["kind"])
        try:
            async with self._writes:
                obj = await self._client.patch(
                    res,
                    meta["name"],
                    dict(manifest),
                    namespace=meta.get("namespace"),
                    patch_type=PatchType.APPLY,
                    field_manager=self.field_manager,
                    force=True,
                )
        except ApiError as exc:
            if exc.status.code == 403 and "being terminated" in str(exc.status.message):
                raise NamespaceTerminating(str(meta.get("namespace"))) from exc
            raise ApplyError(f"apply {manifest['kind']} {meta['name']}: {exc}") from exc
        except Exception as exc:  # timeouts and resets of the HTTP client
            raise ApplyError(f"apply {manifest['kind']} {meta['name']}: {exc!r}") from exc
        return _plain(obj)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False when it did not exist."""
        try:
            async with self._writes:
                await self._client.delete(_resource(api_version, kind), name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise ApplyError(f"delete {kind} {name}: {exc}") from exc
        except Exception as exc:
            raise ApplyError(f"delete {kind} {name}: {exc!r}") from exc
        return True

    async def controller_uid(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> str | None:
        """The uid of an existing object's controller owner: "" for none, None if absent."""
        try:
            obj = await self._client.get(_resource(api_version, kind), name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise ApplyError(f"get {kind} {name}: {exc}") from exc
        except Exception as exc:
            raise ApplyError(f"get {kind} {name}: {exc!r}") from exc
        refs = (_plain(obj).get("metadata") or {}).get("ownerReferences") or []
        return next((str(r.get("uid", "")) for r in refs if r.get("controller")), "")

    async def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._client.get(
                _resource(builders.API_VERSION, builders.KIND), name, namespace=namespace
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise ApplyError(f"get {builders.KIND} {name}: {exc}") from exc
        except Exception as exc:
            raise ApplyError(f"get {builders.KIND} {name}: {exc!r}") from exc
        return _plain(obj)

    async def _merge_patch(
        self, res: Any, name: str, body: dict[str, Any], namespace: str | None, what: str
    ) -> bool:
        """One merge patch through the write queue; False when the object is gone."""
        try:
            async with self._writes:
                await self._client.patch(
                    res, name, body, namespace=namespace, patch_type=PatchType.MERGE
                )
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise ApplyError(f"{what}: {exc}") from exc
        except Exception as exc:
            raise ApplyError(f"{what}: {exc!r}") from exc
        return True

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the status subresource; False when the object is gone."""
        res = _resource(builders.API_VERSION, builders.KIND)
        return await self._merge_patch(
            res.Status, name, {"status": dict(status)}, namespace, f"patch status of {name}"
        )

    async def scale(self, namespace: str, name: str, replicas: int) -> bool:
        """Write replicas through the ModelDeployment's scale subresource; False when gone."""
        res = _resource(builders.API_VERSION, builders.KIND)
        return await self._merge_patch(
            res.Scale, name, {"spec": {"replicas": int(replicas)}}, namespace,
            f"scale {name} to {replicas}",
        )  # fmt: skip

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a ScalingPolicy's status; False when it is gone."""
        return await self._merge_patch(
            POLICY.Status, name, {"status": dict(status)}, None,
            f"patch status of ScalingPolicy {name}",
        )  # fmt: skip

    async def crd_established(self, name: str) -> bool:
        try:
            crd = _plain(await self._client.get(_CRD, name))
        except ApiError as exc:
            if exc.status.code in (403, 404):
                return False
            raise
        return is_established(crd)


def is_established(crd: Mapping[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
