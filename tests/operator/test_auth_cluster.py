"""Fail-closed auth on the real parts: a token Secret whose value is empty (or only a
newline) gives a model whose runtime refuses to start on the dev cluster's real node
(kubelet, containerd, runc), and the real operator reports it: Degraded=True with reason
InvalidAuthToken, status.auth Enabled, and one Event while the pod keeps crash-looping.

Main's runtime served such a model without any token (auth silently off)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operator_helpers import apply, condition, events, get, model, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODE_SCHEDULING = {
    "nodeSelector": {"berth.dev/local-node": "true"},
    "tolerations": [{"key": "berth.dev/local-node", "operator": "Exists", "effect": "NoSchedule"}],
}


@pytest.fixture(scope="module")
def real_node(cluster: Any) -> Any:
    """The dev cluster's real node, started if it is not running (the operator stays ours)."""
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=True, prometheus=False, operator=False, examples=False))
    return cluster


def runtime_pod(cluster: Any, ns: str) -> dict[str, Any] | None:
    pods = get(cluster, "pods", ns=ns) or {"items": []}
    return next(iter(pods["items"]), None)


def terminations(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            if state.get("terminated"):
                out.append({**state["terminated"], "restartCount": cs.get("restartCount", 0)})
    return out


@pytest.mark.parametrize(
    "value",
    [
        # `kubectl create secret --from-literal=token=`: the key holds nothing
        "",
        # `--from-file` of a file holding one empty line: only whitespace is empty too
        "\n",
    ],
    ids=["empty", "newline-only"],
)
def test_an_empty_token_secret_gives_a_clear_condition_and_one_event(
    real_node: Any, operator: Any, namespace: str, tmp_path: Path, value: str
) -> None:
    token = tmp_path / "token"
    token.write_text(value)
    real_node.kubectl("create", "secret", "generic", "tok", "-n", namespace,
                      f"--from-file=token={token}")  # fmt: skip
    apply(real_node, model("m", auth={"secretRef": {"name": "tok"}}, replicas=1,
                           resources={"cpu": "100m", "memory": "256Mi"},
                           scheduling=NODE_SCHEDULING), namespace)  # fmt: skip

    def degraded() -> dict[str, Any]:
        c = condition(get(real_node, "md", "m", namespace), "Degraded")
        return c if c.get("reason") == "InvalidAuthToken" else {}

    cond = wait_for(degraded, timeout=240, what="Degraded reason InvalidAuthToken")
    assert cond["status"] == "True"
    assert cond["message"].startswith(
        "the runtime refused to start (spec.auth.secretRef: Secret tok, key token): the bearer "
        "token from BERTH_AUTH_TOKEN is empty or only whitespace"
    ), cond["message"]
    md = get(real_node, "md", "m", namespace)
    assert md["status"]["auth"] == "Enabled"
    ready = condition(md, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidAuthToken")

    # the real kubelet read the runtime's line from its termination message; exit code 2
    pod = runtime_pod(real_node, namespace)
    ended = terminations(pod)
    assert ended and ended[0]["exitCode"] == 2, json.dumps((pod or {}).get("status"))
    assert ended[0]["message"].startswith("berth-runtime: start-up refused (InvalidAuthToken)")

    # the pod keeps crash-looping; the condition stays, and there is still one Event
    wait_for(lambda: max((t["restartCount"] for t in terminations(
        runtime_pod(real_node, namespace))), default=0) >= 2, timeout=180,
        what="the runtime container restarted twice")  # fmt: skip
    assert degraded()["lastTransitionTime"] == cond["lastTransitionTime"]
    told = [e for e in events(real_node, namespace, "m") if e.get("reason") == "InvalidAuthToken"]
    assert len(told) == 1 and int(told[0].get("count") or 1) == 1, told
    assert told[0]["type"] == "Warning"
    assert "Degraded=True: the runtime refused to start" in told[0]["message"], told[0]
