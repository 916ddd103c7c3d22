"""Tenant allowlists, pure: what a ModelDeployment may ask for on a shared cluster.

The operator's settings (`TenantSettings`) list the image prefixes, priority classes,
toleration keys and object-store locations tenants may use. `check()` enforces them at
render time (a `RenderError` naming the field and the allowed values: the model turns
Degraded, InvalidSpec); `admission.py` builds a ValidatingAdmissionPolicy from the same
lists, so the API server refuses such a spec before it is stored, where it is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from berth_operator.errors import RenderError
from berth_operator.settings import Settings, split_list

SYSTEM_PRIORITY_PREFIX = "system-"


@dataclass(frozen=True)
class Allowlists:
    """The parsed lists; an empty tuple leaves that field unrestricted."""

    images: tuple[str, ...] = ()
    priority_classes: tuple[str, ...] = ()
    toleration_keys: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Allowlists:
        t = settings.tenant
        return cls(
            images=split_list(t.images),
            priority_classes=split_list(t.priority_classes),
            toleration_keys=split_list(t.toleration_keys),
            buckets=tuple(b.rstrip("/") for b in split_list(t.buckets)),
        )


def _shown(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def bucket_allowed(uri: str, buckets: tuple[str, ...]) -> bool:
    """Whether an s3:// or gs:// URI lies under one of `buckets` (s3://B or s3://B/PREFIX).

    ``s3://models`` allows ``s3://models/x`` but not ``s3://models-evil/x``.
    """
    return any(uri == b or uri.startswith(b + "/") for b in buckets)


def check(spec: Mapping[str, Any], allow: Allowlists, default_image: str) -> None:
    """Raise RenderError for the first field outside the allowlists (field path + allowed)."""
    image = (spec.get("runtime") or {}).get("image") or ""
    allowed_image = image == default_image or any(image.startswith(p) for p in allow.images)
    if image and allow.images and not allowed_image:
        raise RenderError(
            "spec.runtime.image",
            f"image {image!r} is not allowed on this cluster; allowed image prefixes: "
            f"{_shown(allow.images)}",
        )
    sched = spec.get("scheduling") or {}
    priority = sched.get("priorityClassName") or ""
    if priority.startswith(SYSTEM_PRIORITY_PREFIX):
        raise RenderError(
            "spec.scheduling.priorityClassName",
            f"{priority!r} is a system priority class, reserved for the cluster's own pods",
        )
    if priority and allow.priority_classes and priority not in allow.priority_classes:
        raise RenderError(
            "spec.scheduling.priorityClassName",
            f"{priority!r} is not allowed on this cluster; allowed priority classes: "
            f"{_shown(allow.priority_classes)}",
        )
    if allow.toleration_keys:
        for i, tol in enumerate(sched.get("tolerations") or []):
            key = str(tol.get("key") or "")
            if key not in allow.toleration_keys:
                what = repr(key) if key else "an empty key (tolerates every taint)"
                raise RenderError(
                    f"spec.scheduling.tolerations[{i}].key",
                    f"{what} is not allowed on this cluster; allowed toleration keys: "
                    f"{_shown(allow.toleration_keys)}",
                )
    uri = str((spec.get("model") or {}).get("uri") or "")
    stored = uri.startswith(("s3://", "gs://"))
    if allow.buckets and stored and not bucket_allowed(uri, allow.buckets):
        raise RenderError(
            "spec.model.uri",
            f"{uri!r} is not in an allowed bucket on this cluster; allowed locations: "
            f"{_shown(allow.buckets)}",
        )
