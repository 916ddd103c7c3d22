"""The node agent's pure pod-spec -> process translation (berth_dev.podrun)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from berth_dev import podrun
from berth_dev.podrun import Refused

pytestmark = pytest.mark.unit

BIN = Path("/venv/bin")
POD_DIR = Path("/dev-root/agent/pods/ns_p_uid")
FS = POD_DIR / "fs"
PVC_ROOT = Path("/dev-root/pvc")
IMAGE = "ghcr.io/berth-dev/berth-runtime:0.1.0"


def pod(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "uid", "labels": {"app": "m"}},
        "spec": {"nodeName": "local-0", "containers": [container], "volumes": volumes or []},
    }


def plan(p: dict[str, Any], cms: dict[str, Any] | None = None, secs: dict[str, Any] | None = None):
    cms, secs = cms or {}, secs or {}
    vols = podrun.plan_volumes(p, POD_DIR, PVC_ROOT, cms, secs)
    return podrun.plan_container(
        p,
        p["spec"]["containers"][0],
        pod_ip="127.0.2.1",
        host_ip="127.0.0.1",
        pod_dir=POD_DIR,
        bin_dir=BIN,
        volumes=vols,
        configmaps=cms,
        secrets=secs,
        base_env={"PATH": "/venv/bin"},
    )


@pytest.mark.parametrize(
    ("image", "supported"),
    [
        (IMAGE, True),  # the operator's default image
        ("berth-runtime", True),  # no registry, no tag
        ("localhost:5000/berth-runtime:dev", True),  # a registry with a port is not a tag
        ("ghcr.io/x/berth-runtime@sha256:" + "a" * 64, True),  # pinned by digest
        ("ghcr.io/x/berth-runtime-gpu:1", False),  # a different repository
        ("nginx:1.27", False),  # anything else
        ("berth-runtime.example.com/nginx:1", False),  # only the last path component counts
    ],
)
def test_image_mapping(image: str, supported: bool) -> None:
    assert podrun.image_supported(image) is supported


def test_unsupported_image_is_refused_naming_image_and_mapping() -> None:
    with pytest.raises(Refused) as err:
        plan(pod({"name": "c", "image": "nginx:1.27"}))
    assert err.value.reason == "ErrImageNotSupported"
    assert "'nginx:1.27'" in err.value.message
    assert "/venv/bin/berth-runtime" in err.value.message


@pytest.mark.parametrize(
    ("command", "args", "argv"),
    [
        ([], [], ["/venv/bin/berth-runtime", "serve"]),  # the image's entry point + cmd
        ([], ["serve", "--port=9000"], ["/venv/bin/berth-runtime", "serve", "--port=9000"]),
        (["berth-runtime", "serve"], [], ["/venv/bin/berth-runtime", "serve"]),  # operator's
        (["python", "-c", "1"], [], ["/venv/bin/python", "-c", "1"]),  # python of the venv
        (
            ["berth-runtime"],
            ["--name=$(MODEL)", "$$(MODEL)"],
            ["/venv/bin/berth-runtime", "--name=m1", "$(MODEL)"],
        ),
    ],
)
def test_argv(command: list[str], args: list[str], argv: list[str]) -> None:
    c = {"name": "c", "image": IMAGE, "command": command, "args": args}
    c["env"] = [{"name": "MODEL", "value": "m1"}]
    assert plan(pod(c)).argv == argv


def test_unknown_command_is_refused() -> None:
    with pytest.raises(Refused) as err:
        plan(pod({"name": "c", "image": IMAGE, "command": ["bash", "-c", "x"]}))
    assert err.value.reason == "RunContainerError"


def test_env_sources_and_pod_ip() -> None:
    cms = {"cfg": {"A": "1", "B": "2"}}
    secs = {"tok": {"token": base64.b64encode(b"s3cret").decode()}}
    c = {
        "name": "c",
        "image": IMAGE,
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "X", "value": "x"},
            {"name": "Y", "value": "$(X)-y"},  # refers to an earlier variable
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "MISSING",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
            {"name": "BERTH_HOST", "value": "0.0.0.0"},  # overridden by the pod IP
        ],
    }
    env = plan(pod(c), cms, secs).env
    assert env["CFG_A"] == "1" and env["CFG_B"] == "2"
    assert env["Y"] == "x-y"
    assert env["FROM_CM"] == "2"
    assert env["TOKEN"] == "s3cret"
    assert env["NS"] == "ns" and env["IP"] == "127.0.2.1" and env["APP"] == "m"
    assert "MISSING" not in env
    assert env["BERTH_HOST"] == "127.0.2.1"
    assert env["PATH"] == "/venv/bin"  # the base environment


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}},
            'configmap "nope" not found',
        ),
        (
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}},
            'secret "nope" not found',
        ),
        (
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "zz"}}},
            'configmap "cfg" has no key "zz"',
        ),
    ],
)
def test_missing_references_are_config_errors(env: dict[str, Any], message: str) -> None:
    with pytest.raises(Refused) as err:
        plan(pod({"name": "c", "image": IMAGE, "env": [env]}), {"cfg": {"A": "1"}})
    assert err.value.reason == "CreateContainerConfigError"
    assert message in err.value.message


def test_volumes_map_to_local_directories() -> None:
    vols = [
        {"name": "cache", "emptyDir": {}},
        {"name": "store", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "A", "path": "a.txt"}]}},
        {"name": "sec", "secret": {"secretName": "tok"}},
    ]
    p = pod({"name": "c", "image": IMAGE}, vols)
    cms = {"cfg": {"A": "1"}}
    secs = {"tok": {"t": base64.b64encode(b"v").decode()}}
    out = podrun.plan_volumes(p, POD_DIR, PVC_ROOT, cms, secs)
    assert out["cache"].path == POD_DIR / "volumes" / "cache" and out["cache"].ephemeral
    assert out["store"].path == PVC_ROOT / "ns" / "models" and not out["store"].ephemeral
    assert out["cfg"].files == {"a.txt": b"1"}
    assert out["sec"].files == {"t": b"v"}


def test_unsupported_volume_kind_is_refused() -> None:
    p = pod({"name": "c", "image": IMAGE}, [{"name": "h", "hostPath": {"path": "/"}}])
    with pytest.raises(Refused, match="hostPath"):
        podrun.plan_volumes(p, POD_DIR, PVC_ROOT, {}, {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/var/cache/berth", f"{FS}/var/cache/berth"),  # exactly a mount path
        ("/var/cache/berth/x", f"{FS}/var/cache/berth/x"),  # below a mount path
        ("file:///mnt/models/models/minilm", f"file://{FS}/mnt/models/models/minilm"),  # a URI
        ("/mnt/models", f"{FS}/mnt/models"),  # above a mount (a pvc root)
        ("/var/cache/berthx", "/var/cache/berthx"),  # a sibling is not on the mount
        ("/etc/hosts", "/etc/hosts"),  # unrelated paths stay
        ("relative/path", "relative/path"),
        ("s3://bucket/key", "s3://bucket/key"),
    ],
)
def test_translate_path(value: str, expected: str) -> None:
    mounts = {"/var/cache/berth": Path("/x"), "/mnt/models/models": Path("/y")}
    assert podrun.translate_path(value, mounts, FS) == expected


def test_operator_pod_template_runs_locally() -> None:
    """The operator's real Deployment for a pvc:// model maps onto local paths."""
    builders = pytest.importorskip("berth_operator.builders")
    settings_mod = pytest.importorskip("berth_operator.settings")
    md = {
        "apiVersion": "serving.berth.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "minilm", "namespace": "ns", "uid": "u1"},
        "spec": {
            "model": {"uri": "pvc://models/all-minilm-l6-v2", "format": "sentence-transformers"}
        },
    }
    dep = builders.deployment(md, settings_mod.Settings())
    p = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "uid"},
        "spec": dep["spec"]["template"]["spec"],
    }
    pl = plan(p)
    assert pl.argv == ["/venv/bin/berth-runtime", "serve"]
    assert pl.env["BERTH_MODEL_URI"] == f"file://{FS}/mnt/models/models/all-minilm-l6-v2"
    assert pl.env["BERTH_CACHE_DIR"].startswith(str(FS) + "/")
    assert pl.env["BERTH_HOST"] == "127.0.2.1"
    assert pl.links[str(Path("/mnt/models/models"))] == PVC_ROOT / "ns" / "models"
    assert pl.ports["http"] == 8080


def test_gpu_request() -> None:
    c = {"name": "c", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "2"}}}
    assert podrun.gpu_request(pod(c)) == 2
    assert podrun.gpu_request(pod({"name": "c", "image": IMAGE})) == 0


def test_projected_service_account_volume() -> None:
    """The volume the ServiceAccount admission adds to every pod that does not opt out."""
    vol = {
        "name": "kube-api-access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }
    p = pod({"name": "c", "image": IMAGE}, [vol])
    assert podrun.referenced_objects(p) == ({"kube-root-ca.crt"}, set())
    out = podrun.plan_volumes(p, POD_DIR, PVC_ROOT, {"kube-root-ca.crt": {"ca.crt": "PEM"}}, {})
    assert out["kube-api-access"].files == {"token": b"", "ca.crt": b"PEM", "namespace": b"ns"}


def test_image_is_checked_before_volumes() -> None:
    p = pod({"name": "c", "image": "nginx"}, [{"name": "h", "hostPath": {"path": "/"}}])
    with pytest.raises(Refused) as err:
        podrun.check_images(p, BIN)
    assert err.value.reason == "ErrImageNotSupported"


def test_init_containers_are_refused() -> None:
    p = pod({"name": "c", "image": IMAGE})
    p["spec"]["initContainers"] = [{"name": "i", "image": IMAGE}]
    with pytest.raises(Refused, match="init containers"):
        podrun.check_images(p, BIN)
