"""Pure builders: a ModelDeployment dict -> exact child manifests."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import builders
from berth_operator.errors import RenderError
from berth_operator.settings import Settings

pytestmark = pytest.mark.unit

S = Settings()
OWNER = {
    "apiVersion": "serving.berth.dev/v1alpha1",
    "kind": "ModelDeployment",
    "name": "m",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
LABELS = {
    "app.kubernetes.io/name": "berth-runtime",
    "app.kubernetes.io/instance": "m",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/managed-by": "berth-operator",
    "serving.berth.dev/model": "m",
}
SELECTOR = {"app.kubernetes.io/name": "berth-runtime", "app.kubernetes.io/instance": "m"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# The scrape endpoint: 2 s (the panic window is 6 s), the model name as a series label.
PODMETRICS = [{"port": "http", "path": "/metrics", "interval": "2s", "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_serving_berth_dev_model"], "targetLabel": "modeldeployment"}]}]  # fmt: skip


def md(**spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"uri": "file:///models/m.pt", "format": "torchscript"})
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


def pod_spec(m: dict[str, Any], settings: Settings = S) -> dict[str, Any]:
    return builders.deployment(m, settings)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_minimal_cpu_deployment_exact() -> None:
    # The whole Deployment for the smallest spec: every default visible in one place.
    probe = {"port": "http"}
    assert builders.deployment(md(), S) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns", "labels": LABELS, "ownerReferences": [OWNER]},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": 1200,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": LABELS,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8080",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "ghcr.io/berth-dev/berth-runtime:0.1.0",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["berth-runtime", "serve"],
                            "env": [
                                {"name": "BERTH_MODEL_URI", "value": "file:///models/m.pt"},
                                {"name": "BERTH_FORMAT", "value": "torchscript"},
                                {"name": "BERTH_MODEL_NAME", "value": "m"},
                                {"name": "BERTH_PORT", "value": "8080"},
                                {"name": "BERTH_MAX_BATCH_SIZE", "value": "32"},
                                {"name": "BERTH_MAX_DELAY_MS", "value": "5"},
                                {"name": "BERTH_DTYPE", "value": "float32"},
                                {"name": "BERTH_CACHE_DIR", "value": "/var/cache/berth"},
                                {"name": "HOME", "value": "/tmp"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {
                                # ephemeral storage: the 50Gi cache + 1Gi /tmp + 1Gi headroom
                                "requests": {
                                    "cpu": "1",
                                    "memory": "2Gi",
                                    "ephemeral-storage": "1Gi",
                                },
                                "limits": {"memory": "2Gi", "ephemeral-storage": "52Gi"},
                            },
                            "startupProbe": {
                                "httpGet": {"path": "/v2/health/ready", **probe},
                                "periodSeconds": 1,
                                "timeoutSeconds": 2,
                                "failureThreshold": 900,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", **probe},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", **probe},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            # endpoints leave routing before the drain starts
                            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "model-cache", "mountPath": "/var/cache/berth"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


# (spec fragment, expected scheduling-related pod spec fields, expected resources) -- why
GPU_CASES = [
    # CPU only: no GPU limit, no toleration, no selector.
    ({}, {}, {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}),
    # One H100: limit, product selector, GPU toleration.
    (
        {"resources": {"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}}},
        {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [GPU_TOLERATION],
        },
        {
            "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
        },
    ),
    # GPUs without a product: any GPU node, still tolerated.
    (
        {"resources": {"gpu": {"count": 4}, "cpu": 8, "memory": "64Gi"}},
        {"tolerations": [GPU_TOLERATION]},
        {
            "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"},
            "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
        },
    ),
    # User scheduling comes after the GPU translation and is merged, not replaced.
    (
        {
            "resources": {"gpu": {"count": 1, "product": "A"}},
            "scheduling": {
                "nodeSelector": {"zone": "z1"},
                "tolerations": [{"key": "spot", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {}},
                "priorityClassName": "high",
            },
        },
        {
            "nodeSelector": {"nvidia.com/gpu.product": "A", "zone": "z1"},
            "tolerations": [GPU_TOLERATION, {"key": "spot", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
            "priorityClassName": "high",
        },
        {
            "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
        },
    ),
    # The same product in both places is not a conflict.
    (
        {
            "resources": {"gpu": {"count": 1, "product": "A"}},
            "scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "A"}},
        },
        {"nodeSelector": {"nvidia.com/gpu.product": "A"}, "tolerations": [GPU_TOLERATION]},
        {
            "requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
        },
    ),
]


@pytest.mark.parametrize(("spec", "sched", "resources"), GPU_CASES)
def test_gpu_translation(spec: dict[str, Any], sched: dict[str, Any], resources: Any) -> None:
    ps = pod_spec(md(**spec))
    keys = ("nodeSelector", "tolerations", "affinity", "priorityClassName")
    assert {k: ps[k] for k in keys if k in ps} == sched
    got = ps["containers"][0]["resources"]
    for part in got.values():  # ephemeral storage has its own tests (test_storage_limits)
        part.pop("ephemeral-storage", None)
    assert got == resources


# (uri, BERTH_MODEL_URI, PVC claim mounted or None) -- why
URI_CASES = [
    # pvc:// becomes a read-only mount and a file:// path under /mnt/models/<claim>.
    ("pvc://models/resnet50/model.pt", "file:///mnt/models/models/resnet50/model.pt", "models"),
    # A whole claim (directory models).
    ("pvc://minilm", "file:///mnt/models/minilm", "minilm"),
    # Other schemes pass through unchanged.
    ("s3://bucket/key.pt", "s3://bucket/key.pt", None),
    ("https://h/m.pt#sha256=" + "a" * 64, "https://h/m.pt#sha256=" + "a" * 64, None),
]


@pytest.mark.parametrize(("uri", "runtime_uri", "claim"), URI_CASES)
def test_model_uri(uri: str, runtime_uri: str, claim: str | None) -> None:
    ps = pod_spec(md(model={"uri": uri, "format": "torchscript"}))
    env = {e["name"]: e["value"] for e in ps["containers"][0]["env"]}
    assert env["BERTH_MODEL_URI"] == runtime_uri
    pvcs = [v for v in ps["volumes"] if "persistentVolumeClaim" in v]
    if claim is None:
        assert pvcs == []
    else:
        assert pvcs == [
            {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        ]
        assert {
            "name": "model-store",
            "mountPath": f"/mnt/models/{claim}",
            "readOnly": True,
        } in ps["containers"][0]["volumeMounts"]


def test_runtime_settings_reach_env() -> None:
    # Every runtime knob the runtime reads from the environment is rendered.
    m = md(
        model={
            "uri": "s3://b/w.safetensors",
            "format": "safetensors",
            "name": "resnet",
            "factory": "torchvision.models:resnet50",
        },
        runtime={
            "image": "img:1",
            "batching": {"maxBatchSize": 8, "maxDelayMs": 2},
            "dtype": "bfloat16",
        },
    )
    from dataclasses import replace

    allow = replace(S, runtime=replace(S.runtime, factory_allow="torchvision"))
    container = pod_spec(m, allow)["containers"][0]
    assert container["image"] == "img:1"
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "BERTH_MODEL_URI": "s3://b/w.safetensors",
        "BERTH_FORMAT": "safetensors",
        "BERTH_MODEL_NAME": "resnet",
        "BERTH_PORT": "8080",
        "BERTH_MAX_BATCH_SIZE": "8",
        "BERTH_MAX_DELAY_MS": "2",
        "BERTH_DTYPE": "bfloat16",
        "BERTH_CACHE_DIR": "/var/cache/berth",
        "HOME": "/tmp",
        "BERTH_FACTORY": "torchvision.models:resnet50",
        "BERTH_FACTORY_ALLOW": "torchvision",  # the operator's allowlist
        "AWS_EC2_METADATA_DISABLED": "true",  # s3:// never uses the node's identity
    }


# (spec, field named in the error) -- why
RENDER_ERRORS = [
    # Product twice, with different values.
    (
        {
            "resources": {"gpu": {"count": 1, "product": "A"}},
            "scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "B"}},
        },
        "spec.scheduling.nodeSelector",
    ),
    # The CRD refuses these too; the builder does not trust that it ran.
    ({"model": {"uri": "ftp://x/y", "format": "torchscript"}}, "spec.model.uri"),
    ({"model": {"uri": "pvc://c/a/%2e%2e/b", "format": "torchscript"}}, "spec.model.uri"),
    ({"model": {"uri": "https://h/m.pt", "format": "torchscript"}}, "spec.model.uri"),
    ({"model": {"uri": "file:///m", "format": "onnx"}}, "spec.model.format"),
    ({"model": {"uri": "file:///m", "format": "safetensors"}}, "spec.model.factory"),
    # A factory is code: refused unless the operator's allowlist names its module.
    (
        {"model": {"uri": "file:///m", "format": "safetensors", "factory": "os:system"}},
        "spec.model.factory",
    ),
    ({"resources": {"gpu": {"count": 65}}}, "spec.resources.gpu.count"),
    ({"resources": {"cpu": "lots"}}, "spec.resources.cpu"),
    ({"resources": {"memory": "0"}}, "spec.resources.memory"),
]


@pytest.mark.parametrize(("spec", "field"), RENDER_ERRORS)
def test_render_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as info:
        builders.render(md(**spec), S, podmonitor=True)
    assert info.value.field == field


def test_render_children_and_absent() -> None:
    # One replica: no PDB (and it must be removed if it exists); no PodMonitor without the CRD.
    one = builders.render(md(), S, podmonitor=False)
    assert [c["kind"] for c in one.apply] == ["Deployment", "Service", "NetworkPolicy"]
    assert one.absent == [("policy/v1", "PodDisruptionBudget", "m")]
    # Two replicas and Prometheus Operator present: all four children.
    two = builders.render(md(replicas=2), S, podmonitor=True)
    assert [c["kind"] for c in two.apply] == [
        "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "PodMonitor",
    ]  # fmt: skip
    assert two.absent == []
    for child in two.apply:
        assert child["metadata"]["ownerReferences"] == [OWNER]
        assert child["metadata"]["name"] == "m"
        assert child["metadata"]["annotations"][builders.HASH_ANNOTATION]


def test_service_pdb_podmonitor_exact() -> None:
    meta = {"name": "m", "namespace": "ns", "labels": LABELS, "ownerReferences": [OWNER]}
    assert builders.service(md(), S) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    assert builders.pod_disruption_budget(md()) == {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}},
    }
    assert builders.pod_monitor(md()) == {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "podMetricsEndpoints": PODMETRICS,
        },
    }


# (spec, desired replicas) -- why
REPLICAS = [
    ({}, 1),  # default
    ({"replicas": 3}, 3),  # kubectl scale
    ({"replicas": 0}, 0),  # scaled to zero by hand
    ({"replicas": 5, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, 3),  # clamp high
    ({"replicas": 0, "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}, 2),  # clamp low
    ({"replicas": 0, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}, 0),  # idle at zero
]


@pytest.mark.parametrize(("spec", "want"), REPLICAS)
def test_desired_replicas(spec: dict[str, Any], want: int) -> None:
    assert builders.desired_replicas(spec) == want


def test_spec_change_changes_hash_but_not_on_replicas_for_template() -> None:
    a = builders.render(md(), S, podmonitor=False).apply[0]
    b = builders.render(md(replicas=2), S, podmonitor=False).apply[0]
    c = builders.render(md(model={"uri": "file:///other", "format": "torchscript"}), S,
                        podmonitor=False).apply[0]  # fmt: skip
    ha, hb, hc = (x["metadata"]["annotations"][builders.HASH_ANNOTATION] for x in (a, b, c))
    assert len({ha, hb, hc}) == 3
    # Scaling must not roll pods: the pod template is the same.
    assert a["spec"]["template"] == b["spec"]["template"]
    assert a["spec"]["template"] != c["spec"]["template"]


# (want, have, subset?) -- why
SUBSET = [
    ({"a": 1}, {"a": 1, "b": 2}, True),  # server-added fields are ignored
    ({"a": 1}, {"a": 2}, False),  # changed value
    ({"a": {"b": 1}}, {}, False),  # removed field
    ({"cpu": "0.5"}, {"cpu": "500m"}, True),  # quantities compare by value
    ({"m": "1Gi"}, {"m": "1073741824"}, True),
    ({"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 2, "x": 0}, {"n": 1}]}, True),  # any order
    ({"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 1}]}, False),  # item removed
    ({"b": False}, {"b": 0}, False),  # a bool is not a number
    ({"s": "http"}, {"s": "https"}, False),
]


@pytest.mark.parametrize(("want", "have", "expected"), SUBSET)
def test_is_subset(want: Any, have: Any, expected: bool) -> None:
    assert builders.is_subset(want, have) is expected


def test_needs_apply() -> None:
    desired = builders.render(md(), S, podmonitor=False).apply[0]
    live = {**desired, "status": {"replicas": 1}}
    live["spec"] = {**desired["spec"], "paused": False}
    assert builders.needs_apply(desired, None)  # missing
    assert not builders.needs_apply(desired, live)  # same spec, server defaults
    edited = {**live, "spec": {**live["spec"], "replicas": 7}}
    assert builders.needs_apply(desired, edited)  # drift
    old = {**live, "metadata": {**live["metadata"], "annotations": {builders.HASH_ANNOTATION: "x"}}}
    assert builders.needs_apply(desired, old)  # rendered from another spec


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("500m", 0.5), ("2Gi", 2**31), ("1e3", 1000), ("1.5k", 1500), ("x", None)],
)
def test_parse_quantity(value: str, expected: float | None) -> None:
    got = builders.parse_quantity(value)
    assert (None if got is None else float(got)) == expected


def test_settings_from_env() -> None:
    from berth_operator.settings import from_env

    # The runtime image follows BERTH_RUNTIME_IMAGE unless the operator's own key is set.
    assert from_env({"BERTH_RUNTIME_IMAGE": "img:2"}).runtime.image == "img:2"
    env = {"BERTH_RUNTIME_IMAGE": "img:2", "BERTH_OPERATOR_RUNTIME_IMAGE": "img:3",
           "BERTH_OPERATOR_KUBE_CLUSTER_DOMAIN": "example.org",
           "BERTH_OPERATOR_RECONCILE_STATUS_DELAY": "0.5"}  # fmt: skip
    s = from_env(env)
    assert (s.runtime.image, s.kube.cluster_domain, s.reconcile.status_delay) == (
        "img:3", "example.org", 0.5,
    )  # fmt: skip
    with pytest.raises(ValueError, match="BERTH_OPERATOR_RUNTIME_PORT"):
        from_env({"BERTH_OPERATOR_RUNTIME_PORT": "eighty"})


@pytest.mark.parametrize(
    ("allow", "factory", "ok"),
    [
        ("torchvision.models", "torchvision.models:resnet50", True),  # exact prefix
        ("torchvision", "torchvision.models:resnet50", True),  # a parent package
        ("torchvision", "torchvision_evil:build", False),  # a prefix of the name is not a package
        ("", "torchvision.models:resnet50", False),  # empty: nothing is allowed
        (" a.b , torchvision ", "torchvision.models:resnet50", True),  # spaces ignored
    ],
)
def test_factory_allowlist(allow: str, factory: str, ok: bool) -> None:
    from dataclasses import replace

    settings = replace(S, runtime=replace(S.runtime, factory_allow=allow))
    spec = {"model": {"uri": "file:///m", "format": "safetensors", "factory": factory}}
    if not ok:
        with pytest.raises(RenderError, match="allowed module prefixes") as info:
            builders.render(md(**spec), settings, podmonitor=False)
        assert info.value.field == "spec.model.factory"
        return
    out = builders.render(md(**spec), settings, podmonitor=False)
    env = {
        e["name"]: e["value"]
        for e in out.apply[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BERTH_FACTORY"] == factory
    assert env["BERTH_FACTORY_ALLOW"] == ",".join(p.strip() for p in allow.split(",") if p.strip())
