"""`spec.auth` and `spec.model.credentials` delivered by the real kubelet to a real pod.

A TorchScript model lives only in a versitygw bucket on the host (listening on the host
end of the real node's link, which pods reach). The ModelDeployment names two Secrets:
the bearer token (`spec.auth.secretRef`) and the S3 keys (`spec.model.credentials`). The
operator renders `secretKeyRef`s only; the kubelet on `local-node-0` resolves them into
the container's environment; the runtime in the pod fetches `s3://` with the keys and
answers 401 without the token and 200 with it. A second model whose Secret holds a wrong
key never turns Ready and is reported as ModelLoadFailed.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import (
    container_pid,
    md_condition,
    model,
    module_namespace,
    pod_url,
    pods_of,
    process_env,
    ready_pod,
)
from kube_helpers import apply, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TOKEN = "real-node-token-7c1d9a"
GOOD, WRONG = "guarded", "wrong-key"
URI = "s3://models/lin/model.pt"
INPUTS = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
X = [1.0, 2.0, 3.0, 4.0]
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X}]}


def s3_secret_data(s3: Any, secret_key: str | None = None) -> dict[str, str]:
    """What the model's credentials Secret holds to read `s3`: the keys and, as main does
    today, the endpoint (AWS_ENDPOINT_URL) and region. The one place that says where the
    endpoint comes from (operator settings per bucket would drop it from here)."""
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key if secret_key is None else secret_key,
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": s3.region,
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque", "stringData": data}  # fmt: skip


def write_linear(dest: Path) -> Any:
    """A bare TorchScript file: y = W x + b, 4 -> 2, from fixed random weights."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2).eval()
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script is deprecated in favour of export
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(dest / "model.pt"))  # type: ignore[no-untyped-call]
    return net


@pytest.fixture(scope="module")
def guarded(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both models applied at once; the good one Ready. versitygw runs for the module."""
    import torch
    from s3server import s3_server

    tmp = tmp_path_factory.mktemp("s3-real")
    host_ip = stack.state["node"]["hostIP"]  # the host end of the node link: pods reach it
    with contextlib.ExitStack() as stack_:
        s3 = stack_.enter_context(s3_server(tmp / "s3", host=host_ip))
        ns = stack_.enter_context(module_namespace(stack, "e2e-creds"))
        net = write_linear(tmp / "lin")
        s3.client().create_bucket(Bucket="models")
        s3.upload_dir("models", "lin", tmp / "lin")
        apply(stack, secret("model-token", {"token": TOKEN}), ns)
        apply(stack, secret("s3-creds", s3_secret_data(s3)), ns)
        apply(stack, secret("s3-wrong", s3_secret_data(s3, secret_key="not-the-key-0000")), ns)
        t0 = time.monotonic()
        for name, creds in ((GOOD, "s3-creds"), (WRONG, "s3-wrong")):
            apply(stack, model(
                name, URI, "torchscript",
                model_extra={"inputs": INPUTS, "credentials": {"secretRef": {"name": creds}}},
                auth={"secretRef": {"name": "model-token"}},
            ), ns)  # fmt: skip
        pod = ready_pod(stack, ns, GOOD, timeout=300)
        print(f"\nthe s3 model Ready in {time.monotonic() - t0:.1f}s")
        with torch.inference_mode():
            want = net(torch.tensor([X]))[0].tolist()
        yield {"ns": ns, "pod": pod, "s3": s3, "want": want}


def test_the_token_secret_guards_the_pods_inference_routes(guarded: dict[str, Any]) -> None:
    url = f"{pod_url(guarded['pod'])}/v2/models/{GOOD}/infer"
    bare = httpx.post(url, json=BODY, timeout=30)
    assert bare.status_code == 401, bare.text
    assert "error" in bare.json()
    wrong = httpx.post(url, json=BODY, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401, wrong.text
    r = httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    # the weights exist only in the bucket: this answer was computed from the s3 object
    assert r.json()["outputs"][0]["data"] == pytest.approx(guarded["want"], rel=1e-5)
    # the kubelet's probes and Prometheus' scrapes need no token
    assert httpx.get(f"{pod_url(guarded['pod'])}/v2/health/ready", timeout=10).status_code == 200
    assert httpx.get(f"{pod_url(guarded['pod'])}/metrics", timeout=10).status_code == 200


def test_the_model_was_fetched_from_the_bucket_with_the_secrets_keys(
    stack: Any, guarded: dict[str, Any]
) -> None:
    """The object is not public (an unsigned GET is refused), so the pod that answered from
    it read it with the Secret's keys, from the endpoint the Secret names."""
    s3 = guarded["s3"]
    anon = httpx.get(f"{s3.endpoint}/models/lin/model.pt", timeout=10)
    assert anon.status_code == 403, anon.status_code
    env = process_env(container_pid(stack, guarded["pod"]))
    assert env["BERTH_MODEL_URI"] == URI
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint


def test_secret_values_reach_the_container_only_through_the_kubelet(
    stack: Any, guarded: dict[str, Any]
) -> None:
    ns, pod = guarded["ns"], guarded["pod"]
    s3 = guarded["s3"]
    for kind, name in (("deployment", GOOD), ("pod", pod["metadata"]["name"])):
        stored = stack.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout
        assert TOKEN not in stored and s3.secret_key not in stored, kind
        env = json.loads(stored)["spec"]
        env = (env.get("template", {}).get("spec") or env)["containers"][0]["env"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
        assert refs["BERTH_AUTH_TOKEN"] == {"name": "model-token", "key": "token"}
        assert refs["AWS_SECRET_ACCESS_KEY"]["name"] == "s3-creds"
    # ...and the container's process was started with the values the kubelet read
    env = process_env(container_pid(stack, pod))
    assert env["BERTH_AUTH_TOKEN"] == TOKEN
    assert env["AWS_ACCESS_KEY_ID"] == s3.access_key
    assert env["AWS_SECRET_ACCESS_KEY"] == s3.secret_key
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"  # never the node's own identity


def test_a_wrong_key_in_the_secret_is_reported_as_model_load_failed(
    stack: Any, guarded: dict[str, Any]
) -> None:
    ns = guarded["ns"]

    def degraded() -> dict[str, Any] | None:
        cond = md_condition(stack, ns, WRONG, "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for(degraded, 300, what=f"{WRONG} to be Degraded", interval=1)
    assert cond["reason"] == "ModelLoadFailed", cond
    pods = pods_of(stack, ns, WRONG)
    assert pods and not any(
        c["type"] == "Ready" and c["status"] == "True"
        for p in pods
        for c in (p.get("status") or {}).get("conditions") or []
    ), "a model without a valid key must never turn Ready"
    # the runtime's log names the refusal (the Degraded message is the kubelet's back-off)
    logs = stack.kubectl("logs", "-n", ns, pods[0]["metadata"]["name"], "--previous",
                         check=False)  # fmt: skip
    assert "SignatureDoesNotMatch" in logs.stdout, (logs.stdout + logs.stderr)[-3000:]
    ready = md_condition(stack, ns, WRONG, "Ready")
    assert ready is not None and ready["status"] == "False", ready
