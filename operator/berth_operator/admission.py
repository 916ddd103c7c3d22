"""The tenant allowlists as a ValidatingAdmissionPolicy (pure: settings -> manifests).

Kubernetes (admissionregistration.k8s.io/v1, GA since 1.30) evaluates the policy's CEL
rules inside the API server, so a ModelDeployment outside the allowlists is refused at
`kubectl apply` with the field path and the allowed values, and no webhook server runs.
The lists live in a parameter object, a ConfigMap in Berth's namespace, so changing them
needs no new policy. The operator checks the same lists at render time (tenancy.py) as
the fallback where the policy is not installed.

`manifests(settings)` returns [ConfigMap (params), ValidatingAdmissionPolicy, binding];
the dev cluster applies them when tenant lists are configured, and the Helm chart
renders the same objects (a test keeps them identical).
"""

from __future__ import annotations

from typing import Any

from berth_operator import builders
from berth_operator.settings import Settings
from berth_operator.tenancy import SYSTEM_PRIORITY_PREFIX, Allowlists

POLICY_NAME = "berth-tenant-allowlists"
PARAMS_NAME = "berth-tenant-allowlists"
API = "admissionregistration.k8s.io/v1"

Manifest = dict[str, Any]

# A list parameter: comma-separated in the ConfigMap; '' leaves the field unrestricted.
_LIST = "(params.data.{key} == '' ? [] : params.data.{key}.split(','))"


def _list(key: str) -> str:
    return _LIST.format(key=key)


def _validations() -> list[dict[str, Any]]:
    sched = "has(object.spec.scheduling)"
    pc = "object.spec.scheduling.priorityClassName"
    tols = "object.spec.scheduling.tolerations"
    image = "object.spec.runtime.image"
    uri = "object.spec.model.uri"
    curi = "object.spec.canary.model.uri"
    return [
        {
            "expression": (
                f"!has(object.spec.runtime) || !has({image}) || {image} == params.data.defaultImage"
                f" || params.data.images == '' || {_list('images')}.exists(p, {image}.startsWith(p))"
            ),
            "messageExpression": (
                f"'spec.runtime.image: image ' + {image} + ' is not allowed on this cluster; "
                "allowed image prefixes: ' + params.data.images.replace(',', ', ')"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": f"!{sched} || !has({pc}) || !{pc}.startsWith('{SYSTEM_PRIORITY_PREFIX}')",
            "messageExpression": (
                f"'spec.scheduling.priorityClassName: ' + {pc} + ' is a system priority class, "
                "reserved for the cluster\\'s own pods'"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": (
                f"!{sched} || !has({pc}) || params.data.priorityClasses == '' || "
                f"{pc} in {_list('priorityClasses')}"
            ),
            "messageExpression": (
                f"'spec.scheduling.priorityClassName: ' + {pc} + ' is not allowed on this "
                "cluster; allowed priority classes: ' + "
                "params.data.priorityClasses.replace(',', ', ')"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": (
                f"!{sched} || !has({tols}) || params.data.tolerationKeys == '' || "
                f"{tols}.all(t, has(t.key) && t.key in {_list('tolerationKeys')})"
            ),
            "messageExpression": (
                "'spec.scheduling.tolerations: key ' + "
                f"{tols}.filter(t, !has(t.key) || !(t.key in {_list('tolerationKeys')}))"
                ".map(t, has(t.key) && t.key != '' ? t.key : '(empty: every taint)')[0] + "
                "' is not allowed on this cluster; allowed toleration keys: ' + "
                "params.data.tolerationKeys.replace(',', ', ')"
            ),
            "reason": "Forbidden",
        },
        {
            "expression": (
                f"!{uri}.matches('^(s3|gs)://') || params.data.buckets == '' || "
                f"{_list('buckets')}.exists(b, {uri} == b || {uri}.startsWith(b + '/'))"
            ),
            "messageExpression": (
                f"'spec.model.uri: ' + {uri} + ' is not in an allowed bucket on this cluster; "
                "allowed locations: ' + params.data.buckets.replace(',', ', ')"
            ),
            "reason": "Forbidden",
        },
        {  # the canary's model (spec.canary.model, canary.py) is held to the same list
            "expression": (
                f"!has(object.spec.canary) || !{curi}.matches('^(s3|gs)://') || "
                f"params.data.buckets == '' || "
                f"{_list('buckets')}.exists(b, {curi} == b || {curi}.startsWith(b + '/'))"
            ),
            "messageExpression": (
                f"'spec.canary.model.uri: ' + {curi} + ' is not in an allowed bucket on this "
                "cluster; allowed locations: ' + params.data.buckets.replace(',', ', ')"
            ),
            "reason": "Forbidden",
        },
    ]


def params(settings: Settings, namespace: str | None = None) -> Manifest:
    """The ConfigMap the policy reads its lists from."""
    allow = Allowlists.from_settings(settings)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PARAMS_NAME,
            "namespace": namespace or settings.network.berth_namespace,
            "labels": {
                "app.kubernetes.io/name": "berth",
                "app.kubernetes.io/component": "admission",
            },
        },
        "data": {
            "defaultImage": settings.runtime.image,
            "images": ",".join(allow.images),
            "priorityClasses": ",".join(allow.priority_classes),
            "tolerationKeys": ",".join(allow.toleration_keys),
            "buckets": ",".join(allow.buckets),
        },
    }


def policy() -> Manifest:
    """The ValidatingAdmissionPolicy: one rule per allowlist, each message starting with its
    field path (a policy's validations have no fieldPath of their own, unlike CRD rules)."""
    return {
        "apiVersion": API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/name": "berth"}},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [builders.GROUP],
                        "apiVersions": [builders.VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [builders.PLURAL],
                    }
                ],
            },
            # Only new specs and changed specs: metadata updates (finalizers, annotations the
            # operator writes) of a model admitted before the lists changed must still pass,
            # or such a model could not even be deleted. Subresources (status, scale) are
            # not matched at all.
            "matchConditions": [
                {
                    "name": "spec-is-new-or-changed",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
                }
            ],
            "validations": _validations(),
        },
    }


def binding(
    settings: Settings,
    namespace: str | None = None,
    namespace_selector: dict[str, Any] | None = None,
    name: str = POLICY_NAME,
) -> Manifest:
    """Binds the policy to its ConfigMap for the selected namespaces (default: all)."""
    return {
        "apiVersion": API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "berth"}},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "paramRef": {
                "name": PARAMS_NAME,
                "namespace": namespace or settings.network.berth_namespace,
                "parameterNotFoundAction": "Deny",
            },
            "matchResources": {"namespaceSelector": namespace_selector or {}},
        },
    }


def manifests(settings: Settings, namespace: str | None = None) -> list[Manifest]:
    """[params ConfigMap, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding]."""
    return [params(settings, namespace), policy(), binding(settings, namespace)]


def configured(settings: Settings) -> bool:
    """Whether any tenant list is set (the dev cluster installs the policy only then)."""
    allow = Allowlists.from_settings(settings)
    return any((allow.images, allow.priority_classes, allow.toleration_keys, allow.buckets))
