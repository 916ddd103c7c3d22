"""Operator settings: small dataclasses read from the environment (prefix BERTH_OPERATOR_).

Every field has a default that works on the local dev cluster. The runtime image also
honours the shorter BERTH_RUNTIME_IMAGE, which the rest of Berth uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

PREFIX = "BERTH_OPERATOR_"


@dataclass(frozen=True)
class RuntimeSettings:
    """What the operator puts into every runtime pod."""

    # Default runtime image when spec.runtime.image is empty.
    image: str = "ghcr.io/berth-dev/berth-runtime:0.1.0"
    # Container port (the runtime's BERTH_PORT); also serves /metrics.
    port: int = 8080
    # Where the model cache emptyDir is mounted (BERTH_CACHE_DIR).
    cache_dir: str = "/var/cache/berth"
    # Size limit of the model cache emptyDir (a quantity; spec.resources.cacheSize overrides;
    # empty for none): big enough for multi-GB models, small enough that one tenant's
    # downloads cannot fill a node's disk.
    cache_size_limit: str = "50Gi"
    # Size limit of the /tmp emptyDir (a quantity; empty for none).
    tmp_size_limit: str = "1Gi"
    # ephemeral-storage request per pod (a quantity; empty for none). Small: most of the
    # cache is used only while a model downloads.
    ephemeral_storage_request: str = "1Gi"
    # ephemeral-storage limit per pod (a quantity; spec.resources.ephemeralStorage
    # overrides); empty: cache + /tmp size limits + 1Gi for logs and the writable layer.
    ephemeral_storage_limit: str = ""
    # Where pvc:// claims are mounted read-only: <models_root>/<claim>.
    models_root: str = "/mnt/models"
    # Non-root user and group the runtime runs as (distroless "nonroot").
    run_as_user: int = 65532
    # Seconds the startup probe allows for a model to load (period 10 s).
    startup_seconds: int = 900
    # Comma-separated dotted module prefixes a safetensors spec.model.factory may come
    # from (the factory is code the runtime imports); empty refuses every factory.
    factory_allow: str = ""


@dataclass(frozen=True)
class KubeSettings:
    """How children are named, addressed and written."""

    # Field manager for server-side apply.
    field_manager: str = "berth-operator"
    # Cluster DNS domain used in status.url.
    cluster_domain: str = "cluster.local"
    # Service port clients use (targets the container's named port http).
    service_port: int = 80
    # Writes in flight at once; more only queue inside the API server (and time out).
    max_in_flight: int = 16
    # Seconds before one API request is abandoned and retried.
    request_timeout: float = 30


@dataclass(frozen=True)
class ReconcileSettings:
    """Timing of the reconcile loop."""

    # Seconds to gather child events before one status update (coalescing): a pod
    # going Pending -> Running -> Ready within it costs one status write, not three.
    status_delay: float = 0.5
    # Seconds Kopf waits for more events of one object before handling it.
    batch_window: float = 0.02
    # Kopf worker limit per resource kind (0: unlimited); bounds memory at scale.
    max_workers: int = 0
    # Seconds between checks of a child name taken by an object Berth does not own.
    foreign_retry_seconds: float = 15.0


@dataclass(frozen=True)
class AutoscalingSettings:
    """The autoscaler loop (see autoscaling/ and the README's formulas)."""

    # Prometheus base URL, e.g. http://prometheus.monitoring:9090; empty: every autoscaled
    # model reports MetricsUnavailable and holds its replicas.
    prometheus_url: str = ""
    # Seconds between decisions; one query per metric type in use per tick.
    tick_seconds: float = 2.0
    # Seconds before a Prometheus query is abandoned (the model then holds: missing data);
    # sent to Prometheus as the query's timeout= too, and less than tick_seconds.
    query_timeout: float = 1.5
    # Label carrying the ModelDeployment name on runtime series (relabelled from the pod
    # label serving.berth.dev/model by the PodMonitor and the dev Prometheus).
    model_label: str = "modeldeployment"
    # Label carrying the pod's namespace.
    namespace_label: str = "namespace"
    # Range of rate() for rps and latencyP95 (at least two scrape intervals).
    rate_window: str = "10s"
    # Seconds between status refreshes when only the value moved (decisions write at once);
    # 1,000 models x one write per 30 s is ~33 status writes/s at most.
    status_refresh_seconds: float = 30.0
    # Seconds between the log lines with tick duration, queries, CPU per tick and peak RSS.
    stats_log_seconds: float = 60.0
    # Whether the loop runs at all (off: spec.autoscaling only clamps spec.replicas).
    enabled: bool = True
    # What a tenant's promql metric may read: off (refused), namespaced (every selector is
    # restricted to the model's namespace; the default, safe with many tenants) or
    # unrestricted (the operator's whole view of Prometheus: single-tenant clusters only).
    promql: str = "namespaced"


@dataclass(frozen=True)
class NetworkSettings:
    """The NetworkPolicy rendered for every model (BERTH_OPERATOR_NETWORK_*)."""

    # Whether each model gets a NetworkPolicy admitting only the gateway, Prometheus and
    # the namespaces in its spec.network.allowFrom.
    policy: bool = True
    # Namespace Berth (operator and gateway) is installed in; gateway pods come from it.
    berth_namespace: str = "berth-system"
    # Labels of the gateway pods, comma-separated key=value.
    gateway_labels: str = "app.kubernetes.io/name=berth,app.kubernetes.io/component=gateway"
    # Labels of the operator pods (same namespace), comma-separated key=value: the operator
    # reads each new pod's start-up phases from the runtime port (status.startup).
    operator_labels: str = "app.kubernetes.io/name=berth,app.kubernetes.io/component=operator"
    # Namespace Prometheus runs in; empty: no Prometheus rule (scrapes are then refused
    # wherever the network enforces policies).
    prometheus_namespace: str = "monitoring"
    # Labels of the Prometheus pods, comma-separated key=value; empty: any pod there.
    prometheus_labels: str = "app.kubernetes.io/name=prometheus"


@dataclass(frozen=True)
class TenantSettings:
    """What tenants may ask for (BERTH_OPERATOR_TENANT_*); comma-separated lists.

    An empty list leaves that field unrestricted, except that priority classes named
    system-* (the cluster's own) are always refused. Enforced at render time (Degraded,
    InvalidSpec) and, when installed, at admission by the ValidatingAdmissionPolicy that
    admission.py builds from the same lists.
    """

    # Image prefixes spec.runtime.image must start with (e.g. ghcr.io/berth-dev/).
    images: str = ""
    # PriorityClass names spec.scheduling.priorityClassName may name.
    priority_classes: str = ""
    # Taint keys spec.scheduling.tolerations may tolerate (a toleration without a key,
    # which tolerates every taint, is then refused).
    toleration_keys: str = ""
    # Object-store locations s3:// and gs:// model URIs must lie under: s3://BUCKET or
    # s3://BUCKET/PREFIX/ (and gs://...).
    buckets: str = ""


@dataclass(frozen=True)
class GatewaySettings:
    """Where the Berth gateway (`berth-runtime gateway`) is reached."""

    # Base URL of the gateway, e.g. http://berth-gateway.berth-system.svc.cluster.local;
    # status.url is then <url>/ns/<namespace>. Empty: no gateway, status.url is the Service.
    url: str = ""


@dataclass(frozen=True)
class Settings:
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    autoscaling: AutoscalingSettings = field(default_factory=AutoscalingSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    tenant: TenantSettings = field(default_factory=TenantSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


def split_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting as a tuple of its non-empty, stripped entries."""
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def split_labels(raw: str, key: str = "labels") -> dict[str, str]:
    """key=value,key=value as a dict; a malformed entry is a ValueError naming the setting."""
    out: dict[str, str] = {}
    for item in split_list(raw):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{key}: {item!r} is not key=value")
        out[name.strip()] = value.strip()
    return out


def _convert(raw: str, default: object, key: str) -> object:
    try:
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{key}={raw!r}: expected a {type(default).__name__}") from exc
    return raw


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from BERTH_OPERATOR_<GROUP>_<FIELD> variables, e.g. BERTH_OPERATOR_KUBE_CLUSTER_DOMAIN."""
    env = os.environ if env is None else env
    groups: dict[str, object] = {}
    defaults = Settings()
    for group_field in fields(Settings):
        group_default: Any = getattr(defaults, group_field.name)
        values = {}
        for f in fields(group_default):
            key = f"{PREFIX}{group_field.name}_{f.name}".upper()
            if key in env:
                values[f.name] = _convert(env[key], getattr(group_default, f.name), key)
        if (
            group_field.name == "runtime"
            and "image" not in values
            and env.get("BERTH_RUNTIME_IMAGE")
        ):
            values["image"] = env["BERTH_RUNTIME_IMAGE"]
        groups[group_field.name] = type(group_default)(**values)
    settings = Settings(**groups)  # type: ignore[arg-type]
    # Fail at start, naming the variable, rather than at the first render.
    split_labels(settings.network.gateway_labels, f"{PREFIX}NETWORK_GATEWAY_LABELS")
    split_labels(settings.network.operator_labels, f"{PREFIX}NETWORK_OPERATOR_LABELS")
    split_labels(settings.network.prometheus_labels, f"{PREFIX}NETWORK_PROMETHEUS_LABELS")
    check_autoscaling(settings.autoscaling)
    return settings


def check_autoscaling(a: AutoscalingSettings) -> None:
    """Refuse settings the autoscaler cannot honour, naming the variable."""
    modes = ("off", "namespaced", "unrestricted")  # autoscaling/scope.py MODES
    if a.promql not in modes:
        raise ValueError(
            f"{PREFIX}AUTOSCALING_PROMQL={a.promql!r}: expected one of {', '.join(modes)}"
        )
    if not 0 < a.query_timeout < a.tick_seconds:
        raise ValueError(
            f"{PREFIX}AUTOSCALING_QUERY_TIMEOUT={a.query_timeout:g}: expected more than 0 and "
            f"less than {PREFIX}AUTOSCALING_TICK_SECONDS ({a.tick_seconds:g}), so that a slow "
            "query never delays the next tick"
        )
