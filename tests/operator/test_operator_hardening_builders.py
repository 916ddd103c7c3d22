"""Pure tenant controls: auth by Secret reference, NetworkPolicy, allowlists, storage limits,
object-store credentials, and the ValidatingAdmissionPolicy built from the allowlists."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from berth_operator import admission, builders, tenancy
from berth_operator.errors import RenderError
from berth_operator.settings import Settings, from_env

pytestmark = pytest.mark.unit

S = Settings()
SELECTOR = {"app.kubernetes.io/name": "berth-runtime", "app.kubernetes.io/instance": "m"}


def md(**spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"uri": "file:///models/m.pt", "format": "torchscript"})
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }


def container(m: dict[str, Any], settings: Settings = S) -> dict[str, Any]:
    return builders.deployment(m, settings)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def env_of(m: dict[str, Any], settings: Settings = S) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(m, settings)["env"]}


def with_tenant(**lists: str) -> Settings:
    return replace(S, tenant=replace(S.tenant, **lists))


# --- auth ---------------------------------------------------------------------------


def test_auth_token_is_a_secret_reference_never_a_value() -> None:
    m = md(auth={"secretRef": {"name": "model-token", "key": "bearer"}})
    env = container(m)["env"]
    token = [e for e in env if e["name"] == "BERTH_AUTH_TOKEN"]
    assert token == [{
        "name": "BERTH_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "model-token", "key": "bearer"}},
    }]  # fmt: skip
    # key defaults to "token" (as the CRD's default does)
    m = md(auth={"secretRef": {"name": "t"}})
    assert env_of(m)["BERTH_AUTH_TOKEN"] == {"secretKeyRef": {"name": "t", "key": "token"}}
    # no auth: no token variable at all
    assert "BERTH_AUTH_TOKEN" not in env_of(md())


# --- object-store credentials --------------------------------------------------------

S3 = {"uri": "s3://models/resnet/model.pt", "format": "torchscript"}
GS = {"uri": "gs://models/resnet/model.pt", "format": "torchscript"}


def test_s3_credentials_from_a_secret_by_reference() -> None:
    m = md(model={**S3, "credentials": {"secretRef": {"name": "s3-creds"}}})
    env = env_of(m)
    ref = {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_ACCESS_KEY_ID"] == ref
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    # the endpoint, region and session token are optional keys of the Secret
    for var in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_SESSION_TOKEN"):
        assert env[var] == {"secretKeyRef": {"name": "s3-creds", "key": var, "optional": True}}
    # never the node's instance profile
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_s3_without_credentials_still_never_uses_the_node() -> None:
    env = env_of(md(model=S3))
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_ACCESS_KEY_ID" not in env


def test_gs_credentials_mounted_from_a_secret() -> None:
    m = md(model={**GS, "credentials": {"secretRef": {"name": "gcs-key"}}})
    pod = builders.deployment(m, S)["spec"]["template"]["spec"]
    assert {"name": "gcs-credentials", "secret": {
        "secretName": "gcs-key", "defaultMode": 0o440,
        "items": [{"key": "key.json", "path": "key.json"}],
    }} in pod["volumes"]  # fmt: skip
    c = pod["containers"][0]
    assert {"name": "gcs-credentials", "mountPath": "/var/run/secrets/berth/gcs",
            "readOnly": True} in c["volumeMounts"]  # fmt: skip
    env = env_of(m)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/berth/gcs/key.json"
    assert env["NO_GCE_CHECK"] == "True"  # not the node's metadata server


def test_workload_identity_names_the_service_account_without_its_token() -> None:
    m = md(model={**GS, "credentials": {"serviceAccountName": "models-reader"}})
    pod = builders.deployment(m, S)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "models-reader"
    assert pod["automountServiceAccountToken"] is False
    assert "NO_GCE_CHECK" not in env_of(m)  # GKE workload identity is the metadata server


# --- NetworkPolicy -------------------------------------------------------------------


def test_network_policy_exact() -> None:
    m = md(network={"allowFrom": [{"namespace": "team-b"}]})
    ns_label = "kubernetes.io/metadata.name"
    policy = builders.network_policy(m, S)
    assert policy["spec"] == {
        # the model's pods of both versions (stable and canary)
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "berth-runtime",
                                        "serving.berth.dev/model": "m"}},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [
                # the gateway pods in Berth's namespace
                {"namespaceSelector": {"matchLabels": {ns_label: "berth-system"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "berth",
                                                 "app.kubernetes.io/component": "gateway"}}},
                # the operator pods there (they read each new pod's /startup once)
                {"namespaceSelector": {"matchLabels": {ns_label: "berth-system"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "berth",
                                                 "app.kubernetes.io/component": "operator"}}},
                # Prometheus
                {"namespaceSelector": {"matchLabels": {ns_label: "monitoring"}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
                # what the user listed
                {"namespaceSelector": {"matchLabels": {ns_label: "team-b"}}},
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }],
    }  # fmt: skip
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


# (network settings, expected peers after the gateway's and the operator's) -- why
NETWORK_SETTINGS = [
    # no Prometheus namespace configured: no Prometheus rule
    ({"prometheus_namespace": ""}, []),
    # Prometheus without pod labels: any pod of that namespace
    ({"prometheus_labels": ""}, [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]),
]  # fmt: skip


@pytest.mark.parametrize(("net", "rest"), NETWORK_SETTINGS)
def test_network_policy_settings(net: dict[str, str], rest: list[Any]) -> None:
    settings = replace(S, network=replace(S.network, **net))
    peers = builders.network_policy(md(), settings)["spec"]["ingress"][0]["from"]
    assert peers[2:] == rest


def test_network_policy_can_be_turned_off() -> None:
    off = replace(S, network=replace(S.network, policy=False))
    children = builders.render(md(), off, podmonitor=False)
    assert "NetworkPolicy" not in [c["kind"] for c in children.apply]
    assert ("networking.k8s.io/v1", "NetworkPolicy", "m") in children.absent


def test_bad_label_settings_fail_at_start_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="BERTH_OPERATOR_NETWORK_GATEWAY_LABELS"):
        from_env({"BERTH_OPERATOR_NETWORK_GATEWAY_LABELS": "app"})


# --- tenant allowlists ---------------------------------------------------------------

LISTS = {
    "images": "registry.example/berth/,ghcr.io/berth-dev/",
    "priority_classes": "batch-low,serving",
    "toleration_keys": "nvidia.com/gpu,team",
    "buckets": "s3://models/team-a,gs://shared",
}

# (spec fragment, field path refused or None when allowed) -- why
TENANT_CASES: list[tuple[dict[str, Any], str | None]] = [
    # an image under an allowed prefix
    ({"runtime": {"image": "registry.example/berth/runtime:1"}}, None),
    # the operator's own default image is always allowed
    ({"runtime": {"image": S.runtime.image}}, None),
    # any other registry
    ({"runtime": {"image": "evil.example/miner:1"}}, "spec.runtime.image"),
    # a prefix of a prefix is not enough
    ({"runtime": {"image": "registry.example/berthx:1"}}, "spec.runtime.image"),
    # an allowed priority class
    ({"scheduling": {"priorityClassName": "serving"}}, None),
    # one not listed
    ({"scheduling": {"priorityClassName": "vip"}}, "spec.scheduling.priorityClassName"),
    # a system priority class
    ({"scheduling": {"priorityClassName": "system-node-critical"}},
     "spec.scheduling.priorityClassName"),
    # an allowed toleration key
    ({"scheduling": {"tolerations": [{"key": "team", "operator": "Exists"}]}}, None),
    # a control-plane taint
    ({"scheduling": {"tolerations": [{"key": "team", "operator": "Exists"},
                                     {"key": "node-role.kubernetes.io/control-plane",
                                      "operator": "Exists"}]}},
     "spec.scheduling.tolerations[1].key"),
    # no key + Exists tolerates every taint
    ({"scheduling": {"tolerations": [{"operator": "Exists"}]}}, "spec.scheduling.tolerations[0].key"),
    # under an allowed bucket prefix
    ({"model": {"uri": "s3://models/team-a/m.pt", "format": "torchscript"}}, None),
    # the same bucket, another team's prefix
    ({"model": {"uri": "s3://models/team-b/m.pt", "format": "torchscript"}}, "spec.model.uri"),
    # a bucket whose name starts like an allowed one
    ({"model": {"uri": "gs://shared-evil/m.pt", "format": "torchscript"}}, "spec.model.uri"),
    # a whole allowed bucket
    ({"model": {"uri": "gs://shared/any/m.pt", "format": "torchscript"}}, None),
    # pvc:// is the namespace's own storage: not a bucket
    ({"model": {"uri": "pvc://models/m.pt", "format": "torchscript"}}, None),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field"), TENANT_CASES)
def test_tenant_allowlists(spec: dict[str, Any], field: str | None) -> None:
    settings = with_tenant(**LISTS)
    if field is None:
        builders.render(md(**spec), settings, podmonitor=False)
        return
    with pytest.raises(RenderError) as info:
        builders.render(md(**spec), settings, podmonitor=False)
    assert info.value.field == field
    assert "allowed" in info.value.message or "system" in info.value.message


def test_refusal_lists_the_allowed_values() -> None:
    with pytest.raises(RenderError) as info:
        builders.render(md(runtime={"image": "evil:1"}), with_tenant(**LISTS), podmonitor=False)
    assert str(info.value) == (
        "spec.runtime.image: image 'evil:1' is not allowed on this cluster; allowed image "
        "prefixes: registry.example/berth/, ghcr.io/berth-dev/"
    )


def test_empty_lists_leave_fields_open_except_system_priority() -> None:
    spec = {"runtime": {"image": "any:1"},
            "scheduling": {"priorityClassName": "vip", "tolerations": [{"operator": "Exists"}]},
            "model": {"uri": "s3://any/m.pt", "format": "torchscript"}}  # fmt: skip
    builders.render(md(**spec), S, podmonitor=False)
    bad = {"scheduling": {"priorityClassName": "system-cluster-critical"}}
    with pytest.raises(RenderError, match="system priority class"):
        builders.render(md(**bad), S, podmonitor=False)


# --- storage limits ------------------------------------------------------------------

# (resources fragment, cache sizeLimit, ephemeral-storage request, limit) -- why
STORAGE_CASES = [
    # defaults: 50Gi cache + 1Gi /tmp + 1Gi headroom
    ({}, "50Gi", "1Gi", "52Gi"),
    # a bigger cache raises the limit with it
    ({"cacheSize": "200Gi"}, "200Gi", "1Gi", "202Gi"),
    # an explicit limit that holds the cache is kept as written
    ({"ephemeralStorage": "80Gi"}, "50Gi", "1Gi", "80Gi"),
    # a small model: exactly the cache + /tmp is enough
    ({"cacheSize": "100Mi", "ephemeralStorage": "1124Mi"}, "100Mi", "1Gi", "1124Mi"),
    # odd sizes round up to whole MiB
    ({"cacheSize": "1500M"}, "1500M", "1Gi", "3479Mi"),
]


@pytest.mark.parametrize(("res", "cache", "request_", "limit"), STORAGE_CASES)
def test_storage_limits(res: dict[str, Any], cache: str, request_: str, limit: str) -> None:
    dep = builders.deployment(md(resources=res), S)
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-cache"]["emptyDir"] == {"sizeLimit": cache}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "1Gi"}
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == request_
    assert resources["limits"]["ephemeral-storage"] == limit


def test_storage_limit_must_hold_the_cache() -> None:
    with pytest.raises(RenderError) as info:
        builders.deployment(md(resources={"cacheSize": "100Gi", "ephemeralStorage": "10Gi"}), S)
    assert info.value.field == "spec.resources.ephemeralStorage"
    assert "100Gi" in info.value.message


def test_storage_limits_can_be_turned_off() -> None:
    rt = replace(S.runtime, cache_size_limit="", tmp_size_limit="", ephemeral_storage_request="")
    pod = builders.deployment(md(), replace(S, runtime=rt))["spec"]["template"]["spec"]
    assert [v["emptyDir"] for v in pod["volumes"]] == [{}, {}]
    assert "ephemeral-storage" not in pod["containers"][0]["resources"]["limits"]


# --- the admission policy --------------------------------------------------------------


def test_admission_params_carry_the_lists() -> None:
    cm, vap, binding = admission.manifests(with_tenant(**LISTS))
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "berth-system"
    assert cm["data"] == {
        "defaultImage": S.runtime.image,
        "images": "registry.example/berth/,ghcr.io/berth-dev/",
        "priorityClasses": "batch-low,serving",
        "tolerationKeys": "nvidia.com/gpu,team",
        "buckets": "s3://models/team-a,gs://shared",
    }
    assert vap["spec"]["paramKind"] == {"apiVersion": "v1", "kind": "ConfigMap"}
    assert vap["spec"]["failurePolicy"] == "Fail"
    # metadata-only updates of models admitted earlier are not checked again
    assert vap["spec"]["matchConditions"][0]["expression"] == (
        "request.operation == 'CREATE' || object.spec != oldObject.spec"
    )
    assert {v["messageExpression"].split(":")[0].strip("'") for v in vap["spec"]["validations"]} == {
        "spec.runtime.image", "spec.scheduling.priorityClassName",
        "spec.scheduling.tolerations", "spec.model.uri", "spec.canary.model.uri",
    }  # fmt: skip
    assert binding["spec"]["paramRef"] == {
        "name": admission.PARAMS_NAME, "namespace": "berth-system",
        "parameterNotFoundAction": "Deny",
    }  # fmt: skip
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_admission_configured_only_with_a_list() -> None:
    assert not admission.configured(S)
    assert admission.configured(with_tenant(images="x/"))


def test_bucket_prefix_matching() -> None:
    assert tenancy.bucket_allowed("s3://models/a/b", ("s3://models",))
    assert not tenancy.bucket_allowed("s3://models2/a", ("s3://models",))
    assert tenancy.bucket_allowed("s3://models", ("s3://models",))


def test_admission_policy_cli_prints_the_builder_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from berth_operator.main import main

    monkeypatch.setenv("BERTH_OPERATOR_TENANT_IMAGES", "ghcr.io/berth-dev/")
    assert main(["admission-policy"]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert printed == admission.manifests(with_tenant(images="ghcr.io/berth-dev/"))
