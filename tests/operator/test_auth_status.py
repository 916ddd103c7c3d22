"""Pure status for fail-closed auth: the runtime's start-up refusal, as the kubelet writes
it into the pod's status, becomes Degraded=True with reason InvalidAuthToken, steady over
the whole crash loop (so one Event), and status.auth says whether auth is on."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import status
from berth_operator.settings import Settings
from berth_operator.status import DeploymentObs

pytestmark = pytest.mark.unit

S = Settings()
T0 = "2025-01-01T00:00:00Z"
REFUSAL = (
    "berth-runtime: start-up refused (InvalidAuthToken): the bearer token from "
    "BERTH_AUTH_TOKEN is empty or only whitespace; the runtime will not serve without the "
    "token it was asked to require (put a token in the Secret, or remove spec.auth to "
    "serve without one)\n"
)


def md(auth: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"uri": "file:///m", "format": "torchscript"}, "replicas": 1}
    if auth:
        spec["auth"] = {"secretRef": {"name": "tok"}}
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": spec}  # fmt: skip


def terminated(message: str = REFUSAL) -> dict[str, Any]:
    return {"terminated": {"exitCode": 2, "reason": "Error", "message": message,
                           "startedAt": T0, "finishedAt": T0}}  # fmt: skip


def pod(
    state: dict[str, Any],
    last: dict[str, Any] | None = None,
    *,
    restarts: int = 0,
    ready: bool = False,
    name: str = "runtime",
) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-abc", "uid": "p1"},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": name, "state": state, "lastState": last or {},
                                   "restartCount": restarts, "ready": ready}],
        },
    }  # fmt: skip


DEP = DeploymentObs(generation=1, observed_generation=1, spec_replicas=1, replicas=1,
                    updated_replicas=1)  # fmt: skip
BACKOFF = {"waiting": {"reason": "CrashLoopBackOff",
                       "message": "back-off 10s restarting failed container=runtime"}}  # fmt: skip
RUNNING = {"running": {"startedAt": T0}}

# The pod's states over one crash loop, in the order the kubelet writes them.
CRASH_LOOP = [
    pod(terminated()),  # the first run ended: state.terminated holds the message
    pod(BACKOFF, terminated(), restarts=1),  # backing off: lastState keeps it
    pod(RUNNING, terminated(), restarts=1),  # restarted, not yet ended again
    pod(terminated(), terminated(), restarts=1),
    pod(BACKOFF, terminated(), restarts=2),
]


def conds(st: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in st["conditions"]}


def test_the_refusal_is_degraded_invalid_auth_token_naming_the_secret() -> None:
    st = status.compute(md(), DEP, [status.observe_pod(CRASH_LOOP[1])], S, now=T0)
    degraded = conds(st)["Degraded"]
    assert degraded[:2] == ("True", "InvalidAuthToken")
    assert degraded[2].startswith(
        "the runtime refused to start (spec.auth.secretRef: Secret tok, key token): the "
        "bearer token from BERTH_AUTH_TOKEN is empty"
    ), degraded[2]
    assert conds(st)["Ready"][:2] == ("False", "InvalidAuthToken")
    assert st["auth"] == "Enabled"


def test_the_condition_is_steady_over_the_crash_loop_one_change_only() -> None:
    previous: dict[str, Any] | None = None
    changes = []
    for body in CRASH_LOOP:
        st = status.compute(md(), DEP, [status.observe_pod(body)], S, previous=previous, now=T0)
        changes += [(c["type"], c["reason"]) for c in status.condition_changes(previous, st)]
        previous = st
    # the first status: Degraded=True is news; Ready=False (same reason) is not a second one
    assert changes == [("Degraded", "InvalidAuthToken")], changes


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # a reason outside the operator's list: the pod is the tenant's, its text never
        # chooses the condition's reason (the crash loop is reported as before)
        (
            pod(BACKOFF, terminated("berth-runtime: start-up refused (Pwned): x"), restarts=1),
            "ModelLoadFailed",
        ),
        # the refusal text in another container (a sidecar): not the runtime's word
        (pod(BACKOFF, terminated(), restarts=1, name="sidecar"), "ModelLoadFailed"),
        # the line not at the start of a line: quoted inside some other output
        (pod(BACKOFF, terminated("log: " + REFUSAL), restarts=1), "ModelLoadFailed"),
        # the token was fixed and the pod is ready: the old lastState no longer counts
        (pod(RUNNING, terminated(), restarts=3, ready=True), "Healthy"),
    ],
    ids=["unknown-reason", "other-container", "not-at-line-start", "fixed-and-ready"],
)
def test_only_the_runtimes_own_refusal_counts(body: dict[str, Any], reason: str) -> None:
    dep = DEP if reason != "Healthy" else DeploymentObs(
        generation=1, observed_generation=1, spec_replicas=1, replicas=1,
        ready_replicas=1, updated_replicas=1, available_replicas=1)  # fmt: skip
    st = status.compute(md(), dep, [status.observe_pod(body)], S, now=T0)
    assert conds(st)["Degraded"][1] == reason


@pytest.mark.parametrize(("auth", "mode"), [(True, "Enabled"), (False, "Disabled")])
def test_status_says_whether_auth_is_on(auth: bool, mode: str) -> None:
    st = status.compute(md(auth), DEP, [], S, now=T0)
    assert st["auth"] == mode
