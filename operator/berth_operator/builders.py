"""Pure builders: a ModelDeployment (plain dict) -> the manifests of its children.

Nothing here talks to a server. `render()` either returns every child or raises
`RenderError`, so a spec that cannot be rendered never leaves partial children.

Children (all named after the ModelDeployment, all owned by it):
  Deployment           apps/v1                 always
  Service              v1                      always
  NetworkPolicy        networking.k8s.io/v1    unless the operator's network.policy is off
  PodDisruptionBudget  policy/v1               when desired replicas > 1
  PodMonitor           monitoring.coreos.com/v1 when the Prometheus Operator CRD exists
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from berth_operator import tenancy
from berth_operator.errors import RenderError
from berth_operator.settings import Settings, split_labels

GROUP = "serving.berth.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MANAGED_BY = "berth-operator"
HASH_ANNOTATION = f"{GROUP}/spec-hash"
MODEL_LABEL = f"{GROUP}/model"
CONTAINER = "runtime"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
METRICS_PATH = "/metrics"
SCRAPE_INTERVAL = "2s"
MODEL_SERIES_LABEL = "modeldeployment"  # the label the autoscaler's queries group by
MODEL_META_LABEL = "__meta_kubernetes_pod_label_serving_berth_dev_model"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
GCS_CREDENTIALS_DIR = "/var/run/secrets/berth/gcs"
GCS_CREDENTIALS_KEY = "key.json"
HEADROOM = Decimal(2**30)  # ephemeral storage for logs and the writable layer: 1Gi
# s3 credentials: Secret key -> environment variable; optional ones may be left out.
S3_SECRET_KEYS = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
    ("AWS_ENDPOINT_URL", True),
    ("AWS_REGION", True),
)

Manifest = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SCHEMES = ("pvc", "s3", "gs", "https", "file")
_TRAVERSAL = re.compile(r"(^|[/\\]|%2f|%5c)(\.|%2e)(\.|%2e)([/\\?#]|%2f|%5c|$)")
_PIN = re.compile(r"#sha256=[0-9a-f]{64}$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """Where the runtime reads the model, after translating pvc:// to a mounted path."""

    runtime_uri: str
    pvc_claim: str | None = None


@dataclass
class Children:
    """The rendered children: what to apply and which optional children must not exist."""

    apply: list[Manifest] = field(default_factory=list)
    absent: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)

    def by_kind(self, kind: str) -> Manifest | None:
        return next((m for m in self.apply if m["kind"] == kind), None)


# --- small helpers -------------------------------------------------------------


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity as a Decimal, or None when it is not one."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
        if suffix[:1] in ("e", "E"):
            return base * Decimal(10) ** int(suffix[1:])
        return base * Decimal(_SUFFIX[suffix])
    except (InvalidOperation, KeyError):
        return None


def selector_labels(name: str) -> dict[str, str]:
    """Labels the Deployment, Service, PDB and PodMonitor select on (name + instance only)."""
    return {"app.kubernetes.io/name": "berth-runtime", "app.kubernetes.io/instance": name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        MODEL_LABEL: name,
    }


def owner_reference(md: Mapping[str, Any]) -> dict[str, Any]:
    meta = md["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def served_name(md: Mapping[str, Any]) -> str:
    return str(md["spec"]["model"].get("name") or md["metadata"]["name"])


def service_url(name: str, namespace: str, settings: Settings) -> str:
    port = settings.kube.service_port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{name}.{namespace}.svc.{settings.kube.cluster_domain}{suffix}"


def desired_replicas(spec: Mapping[str, Any]) -> int:
    """spec.replicas, kept within [minReplicas, maxReplicas] when autoscaling is set."""
    replicas = int(spec.get("replicas", 1))
    scaling = spec.get("autoscaling")
    if scaling:
        low = int(scaling.get("minReplicas", 0))
        high = int(scaling.get("maxReplicas", replicas))
        replicas = max(low, min(high, replicas))
    return replicas


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A short, stable digest of a manifest (excluding the hash annotation itself)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_model_uri(uri: str, settings: Settings) -> ModelSource:
    """Check a model URI (as the CRD does) and translate pvc:// to a mounted file path."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise RenderError("spec.model.uri", f"scheme must be one of {', '.join(_SCHEMES)}")
    if _TRAVERSAL.search(uri.lower()):
        raise RenderError("spec.model.uri", "must not contain a '..' path segment")
    if "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]:
        raise RenderError(
            "spec.model.uri",
            "must not carry credentials (user:password@host); put s3/gs credentials in a "
            "Secret and name it in spec.model.credentials",
        )
    if scheme == "https" and not _PIN.search(uri):
        raise RenderError("spec.model.uri", "https:// needs a #sha256=<64 hex> pin")
    if scheme != "pvc":
        return ModelSource(runtime_uri=uri)
    claim, _, path = rest.partition("/")
    if not _DNS1123_LABEL.match(claim) or len(claim) > 63:
        raise RenderError("spec.model.uri", f"pvc claim name {claim!r} is not a valid name")
    mounted = f"{settings.runtime.models_root}/{claim}"
    return ModelSource(runtime_uri=f"file://{mounted}/{path}".rstrip("/"), pvc_claim=claim)


# --- children --------------------------------------------------------------------


def _metadata(md: Mapping[str, Any]) -> dict[str, Any]:
    meta = md["metadata"]
    return {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "labels": common_labels(meta["name"]),
        "ownerReferences": [owner_reference(md)],
    }


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    """An env var read from a Secret by the kubelet: the value never enters the manifest."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _credential_env(md: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Object-store credentials and the bearer token, all by reference to Secrets.

    The node's own identity is never used: the EC2 metadata service is off for boto3 and
    the GCE metadata check is off for google-auth unless a service account is named
    (workload identity then supplies the credentials).
    """
    spec = md["spec"]
    model = spec["model"]
    out: list[dict[str, Any]] = []
    creds = model.get("credentials") or {}
    secret = (creds.get("secretRef") or {}).get("name")
    scheme = str(model.get("uri", "")).partition("://")[0]
    if scheme == "s3":
        out.append({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"})
        if secret:
            out += [_secret_env(var, secret, var, optional) for var, optional in S3_SECRET_KEYS]
    elif scheme == "gs":
        if not creds.get("serviceAccountName"):
            out.append({"name": "NO_GCE_CHECK", "value": "True"})
        if secret:
            out.append({
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{GCS_CREDENTIALS_DIR}/{GCS_CREDENTIALS_KEY}",
            })  # fmt: skip
    auth = (spec.get("auth") or {}).get("secretRef") or {}
    if auth.get("name"):
        out.append(_secret_env("BERTH_AUTH_TOKEN", auth["name"], auth.get("key") or "token"))
    return out


def _env(md: Mapping[str, Any], source: ModelSource, settings: Settings) -> list[dict[str, Any]]:
    spec = md["spec"]
    model = spec["model"]
    runtime = spec.get("runtime") or {}
    batching = runtime.get("batching") or {}
    env = {
        "BERTH_MODEL_URI": source.runtime_uri,
        "BERTH_FORMAT": model["format"],
        "BERTH_MODEL_NAME": served_name(md),
        "BERTH_PORT": str(settings.runtime.port),
        "BERTH_MAX_BATCH_SIZE": str(batching.get("maxBatchSize", 32)),
        "BERTH_MAX_DELAY_MS": str(batching.get("maxDelayMs", 5)),
        "BERTH_DTYPE": runtime.get("dtype", "float32"),
        "BERTH_CACHE_DIR": settings.runtime.cache_dir,
        # The root filesystem is read-only: libraries that write under $HOME use /tmp.
        "HOME": "/tmp",
    }
    if model.get("factory"):
        env["BERTH_FACTORY"] = model["factory"]
        env["BERTH_FACTORY_ALLOW"] = ",".join(factory_prefixes(settings))
    # Inline tensor specs (spec.model.inputs/outputs) override the model folder's berth.json.
    for key, var in (("inputs", "BERTH_INPUTS"), ("outputs", "BERTH_OUTPUTS")):
        if model.get(key):
            env[var] = json.dumps(model[key], separators=(",", ":"))
    return [{"name": k, "value": v} for k, v in env.items()] + _credential_env(md)


def _quantity(path: str, value: object) -> Decimal:
    parsed = parse_quantity(value)
    if parsed is None or parsed <= 0:
        raise RenderError(path, f"{value!r} is not a positive quantity")
    return parsed


def _format_bytes(value: Decimal) -> str:
    mib = int((value / 2**20).to_integral_value(rounding=ROUND_CEILING))  # whole MiB, up
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def cache_size(res: Mapping[str, Any], settings: Settings) -> str:
    """The model cache emptyDir's sizeLimit: spec.resources.cacheSize or the setting."""
    size = str(res.get("cacheSize") or settings.runtime.cache_size_limit or "")
    if size:
        _quantity("spec.resources.cacheSize", size)
    return size


def _ephemeral_storage(res: Mapping[str, Any], settings: Settings) -> tuple[str, str]:
    """(request, limit) of ephemeral-storage; the limit covers both emptyDirs and headroom."""
    rt = settings.runtime
    cache = cache_size(res, settings)
    limit = str(res.get("ephemeralStorage") or rt.ephemeral_storage_limit or "")
    needed = sum(
        (_quantity("spec.resources.cacheSize", q) for q in (cache, rt.tmp_size_limit) if q),
        HEADROOM,
    )
    if not limit:
        limit = _format_bytes(needed) if cache else ""
    elif res.get("ephemeralStorage") and _quantity("spec.resources.ephemeralStorage", limit) < (
        needed - HEADROOM
    ):
        raise RenderError(
            "spec.resources.ephemeralStorage",
            f"{limit} is less than the model cache ({cache}) and /tmp ({rt.tmp_size_limit}) "
            "it must hold; raise it or lower spec.resources.cacheSize",
        )
    request = rt.ephemeral_storage_request
    if request and limit and _quantity("ephemeral_storage_request", request) > _quantity("", limit):
        request = limit
    return request, limit


def _resources(spec: Mapping[str, Any], settings: Settings) -> tuple[dict[str, Any], int]:
    res = spec.get("resources") or {}
    gpu = res.get("gpu") or {}
    count = int(gpu.get("count", 0))
    if not 0 <= count <= 64:
        raise RenderError("spec.resources.gpu.count", "must be between 0 and 64")
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for key, default in (("cpu", "1"), ("memory", "2Gi")):
        value = str(res.get(key, default))
        parsed = parse_quantity(value)
        if parsed is None or parsed <= 0:
            raise RenderError(f"spec.resources.{key}", f"{value!r} is not a positive quantity")
        requests[key] = value
    limits["memory"] = requests["memory"]
    storage_request, storage_limit = _ephemeral_storage(res, settings)
    if storage_request:
        requests["ephemeral-storage"] = storage_request
    if storage_limit:
        limits["ephemeral-storage"] = storage_limit
    if count:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(count)
    return {"requests": requests, "limits": limits}, count


def _scheduling(spec: Mapping[str, Any], gpus: int) -> dict[str, Any]:
    """GPU translation first (selector, toleration), then the user's scheduling fields."""
    res = spec.get("resources") or {}
    product = (res.get("gpu") or {}).get("product")
    sched = spec.get("scheduling") or {}
    user_selector = dict(sched.get("nodeSelector") or {})
    out: dict[str, Any] = {}
    selector: dict[str, str] = {}
    if product:
        if user_selector.get(GPU_PRODUCT_LABEL, product) != product:
            raise RenderError(
                "spec.scheduling.nodeSelector",
                f"{GPU_PRODUCT_LABEL}={user_selector[GPU_PRODUCT_LABEL]!r} contradicts "
                f"spec.resources.gpu.product={product!r}; set the product in one place",
            )
        selector[GPU_PRODUCT_LABEL] = product
    selector.update(user_selector)
    if selector:
        out["nodeSelector"] = selector
    tolerations: list[dict[str, Any]] = []
    if gpus:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    tolerations += [dict(t) for t in sched.get("tolerations") or []]
    if tolerations:
        out["tolerations"] = tolerations
    if sched.get("affinity"):
        out["affinity"] = sched["affinity"]
    if sched.get("priorityClassName"):
        out["priorityClassName"] = sched["priorityClassName"]
    return out


PRESTOP_SECONDS = 5  # seconds a leaving pod serves on (the gateway stops routing to it first)


def _probe(path: str, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def deployment(md: Mapping[str, Any], settings: Settings) -> Manifest:
    meta = md["metadata"]
    name = meta["name"]
    spec = md["spec"]
    if len(name) > 50 or not _DNS1035.match(name):
        raise RenderError("metadata.name", "must be a DNS-1035 label of at most 50 characters")
    model = spec.get("model") or {}
    if model.get("format") not in ("torchscript", "torch-export", "safetensors",
                                   "sentence-transformers", "transformers"):  # fmt: skip
        raise RenderError("spec.model.format", f"unsupported format {model.get('format')!r}")
    if model.get("format") == "safetensors" and not model.get("factory"):
        raise RenderError("spec.model.factory", "required when spec.model.format is safetensors")
    if model.get("factory"):
        check_factory(str(model["factory"]), factory_prefixes(settings))
    source = parse_model_uri(str(model.get("uri", "")), settings)
    tenancy.check(spec, tenancy.Allowlists.from_settings(settings), settings.runtime.image)
    resources, gpus = _resources(spec, settings)
    runtime = spec.get("runtime") or {}
    rt = settings.runtime

    cache = cache_size(spec.get("resources") or {}, settings)
    volumes: list[dict[str, Any]] = [
        {"name": "model-cache", "emptyDir": {"sizeLimit": cache} if cache else {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": rt.tmp_size_limit}
         if rt.tmp_size_limit else {}},
    ]  # fmt: skip
    mounts: list[dict[str, Any]] = [
        {"name": "model-cache", "mountPath": rt.cache_dir},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if source.pvc_claim:
        volumes.append({
            "name": "model-store",
            "persistentVolumeClaim": {"claimName": source.pvc_claim, "readOnly": True},
        })  # fmt: skip
        mounts.append({
            "name": "model-store",
            "mountPath": f"{rt.models_root}/{source.pvc_claim}",
            "readOnly": True,
        })  # fmt: skip

    creds = model.get("credentials") or {}
    gcs_secret = (creds.get("secretRef") or {}).get("name")
    if gcs_secret and str(model.get("uri", "")).startswith("gs://"):
        volumes.append({
            "name": "gcs-credentials",
            "secret": {"secretName": gcs_secret, "defaultMode": 0o440,
                       "items": [{"key": GCS_CREDENTIALS_KEY, "path": GCS_CREDENTIALS_KEY}]},
        })  # fmt: skip
        mounts.append(
            {"name": "gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        )

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": runtime.get("image") or rt.image,
        "imagePullPolicy": runtime.get("imagePullPolicy", "IfNotPresent"),
        "command": ["berth-runtime", "serve"],
        "env": _env(md, source, settings),
        "ports": [{"name": "http", "containerPort": rt.port, "protocol": "TCP"}],
        "resources": resources,
        # every second while starting: a cold start (scale from zero) waits for this probe
        "startupProbe": _probe(READY_PATH, 1, max(1, rt.startup_seconds)),
        "readinessProbe": _probe(READY_PATH, 5, 3),
        "livenessProbe": _probe(LIVE_PATH, 10, 3, timeout=5),
        # a leaving pod keeps serving while the gateway and kube-proxy drop its endpoint
        # (EndpointSlice: terminating); only then SIGTERM starts the runtime's drain
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": rt.run_as_user,
            "runAsGroup": rt.run_as_user,
            "fsGroup": rt.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        **_scheduling(spec, gpus),
    }
    if creds.get("serviceAccountName"):
        # Workload identity: the cloud's webhook or metadata server supplies credentials
        # for this account; the Kubernetes API token itself stays unmounted.
        pod_spec["serviceAccountName"] = creds["serviceAccountName"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(md),
        "spec": {
            "replicas": desired_replicas(spec),
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": rt.startup_seconds + 300,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": common_labels(name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(rt.port),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def factory_prefixes(settings: Settings) -> tuple[str, ...]:
    """The operator's allowlist of factory module prefixes (BERTH_OPERATOR_RUNTIME_FACTORY_ALLOW)."""
    return tuple(p.strip() for p in settings.runtime.factory_allow.split(",") if p.strip())


def check_factory(ref: str, allow: tuple[str, ...]) -> None:
    """Refuse a factory outside the allowlist at render time, as the runtime would at load.

    ``pkg`` allows ``pkg`` and ``pkg.sub`` but not ``pkg_evil``; an empty list allows none.
    """
    module = ref.partition(":")[0]
    if any(module == p or module.startswith(p + ".") for p in allow):
        return
    shown = ", ".join(allow) if allow else "none (BERTH_OPERATOR_RUNTIME_FACTORY_ALLOW is empty)"
    raise RenderError(
        "spec.model.factory",
        f"module {module!r} is not allowed by the operator; allowed module prefixes: {shown}",
    )


def service(md: Mapping[str, Any], settings: Settings) -> Manifest:
    name = md["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(md),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{
                "name": "http",
                "port": settings.kube.service_port,
                "targetPort": "http",
                "protocol": "TCP",
            }],
        },
    }  # fmt: skip


def network_policy(md: Mapping[str, Any], settings: Settings) -> Manifest:
    """Ingress to the model's pods only from the gateway, the operator (it reads each new
    pod's /startup once), Prometheus and listed namespaces.

    Only enforced where the cluster's network plugin implements NetworkPolicy (Calico,
    Cilium, ...); the dev cluster's node uses plain CNI plugins, which do not.
    """
    net = settings.network
    name = md["metadata"]["name"]
    peers: list[dict[str, Any]] = [{
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: net.berth_namespace}},
        "podSelector": {"matchLabels": split_labels(labels, what)},
    } for labels, what in ((net.gateway_labels, "gateway_labels"),
                           (net.operator_labels, "operator_labels"))]  # fmt: skip
    if net.prometheus_namespace:
        peer: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: net.prometheus_namespace}}
        }
        labels = split_labels(net.prometheus_labels, "prometheus_labels")
        if labels:
            peer["podSelector"] = {"matchLabels": labels}
        peers.append(peer)
    allow = (md["spec"].get("network") or {}).get("allowFrom") or []
    for i, entry in enumerate(allow):
        ns = str(entry.get("namespace") or "")
        if not _DNS1123_LABEL.match(ns) or len(ns) > 63:
            raise RenderError(
                f"spec.network.allowFrom[{i}].namespace", f"{ns!r} is not a namespace name"
            )
        peers.append({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(md),
        "spec": {
            # both versions' pods (stable and canary.py's) carry the model label
            "podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "berth-runtime", MODEL_LABEL: name}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": peers,
                "ports": [{"protocol": "TCP", "port": settings.runtime.port}],
            }],
        },
    }  # fmt: skip


def pod_disruption_budget(md: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(md),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(md["metadata"]["name"])},
        },
    }


def pod_monitor(md: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(md),
        "spec": {
            "selector": {"matchLabels": selector_labels(md["metadata"]["name"])},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": METRICS_PATH,
                    # short enough for the autoscaler's 6 s panic window
                    "interval": SCRAPE_INTERVAL,
                    # the autoscaler groups by (namespace, modeldeployment)
                    "relabelings": [
                        {
                            "sourceLabels": [MODEL_META_LABEL],
                            "targetLabel": MODEL_SERIES_LABEL,
                        }
                    ],
                }
            ],
        },
    }


def with_hash(manifest: Manifest) -> Manifest:
    """The manifest with its digest in the spec-hash annotation."""
    digest = spec_hash(manifest)
    meta = {**manifest["metadata"]}
    meta["annotations"] = {**meta.get("annotations", {}), HASH_ANNOTATION: digest}
    return {**manifest, "metadata": meta}


def render(md: Mapping[str, Any], settings: Settings, *, podmonitor: bool) -> Children:
    """All children of one ModelDeployment, or RenderError; never a partial set."""
    children = Children()
    children.apply.append(deployment(md, settings))
    children.apply.append(service(md, settings))
    name = md["metadata"]["name"]
    if settings.network.policy:
        children.apply.append(network_policy(md, settings))
    else:
        children.absent.append(("networking.k8s.io/v1", "NetworkPolicy", name))
    if desired_replicas(md["spec"]) > 1:
        children.apply.append(pod_disruption_budget(md))
    else:
        children.absent.append(("policy/v1", "PodDisruptionBudget", name))
    if podmonitor:
        children.apply.append(pod_monitor(md))
    children.apply = [with_hash(m) for m in children.apply]
    return children


# --- drift -----------------------------------------------------------------------


def _same_scalar(want: object, have: object) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return type(want) is type(have) and want == have
    if want == have:
        return True
    if isinstance(want, str | int) and isinstance(have, str | int) and not isinstance(want, bool):
        a, b = parse_quantity(want), parse_quantity(have)
        return a is not None and a == b
    return False


def is_subset(want: object, have: object) -> bool:
    """Whether every field of `want` is present with the same value in `have`.

    Fields the API server adds (defaults, status, clusterIP) are ignored; quantities
    compare by value ("0.5" == "500m"); list items may appear in any order.
    """
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        return all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) < len(want):
            return False
        return all(any(is_subset(w, h) for h in have) for w in want)
    return _same_scalar(want, have)


def needs_apply(desired: Manifest, observed: Mapping[str, Any] | None) -> bool:
    """Apply when the child is missing, was rendered from another spec, or drifted."""
    if observed is None:
        return True
    want_hash = desired["metadata"]["annotations"][HASH_ANNOTATION]
    have_hash = ((observed.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if want_hash != have_hash:
        return True
    want = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(want, observed)
