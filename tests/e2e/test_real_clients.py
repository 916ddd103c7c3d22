"""Official clients through the dev gateway against real model pods on the real node.

Three ModelDeployments in one namespace, shared by every test of this module (the tests
only read them): the tiny chat model (format transformers), MiniLM embeddings
(sentence-transformers) and the small TorchScript CNN. Each runs as a container of the
Berth image on `local-node-0` (kubelet, containerd, runc); the gateway (`berth-runtime
gateway`, a host process watching the cluster) routes to them by name under
`/ns/<namespace>`. The clients are the ones users run: `openai` (chat streaming,
embeddings, the model list), `tritonclient` (Open Inference Protocol v2 over HTTP with the
binary tensor extension) and KServe v1 over plain HTTP JSON (it has no official client).
Each answer is checked against a reference computed here (the same weights in-process) or
against the same request sent straight to the pod.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from e2e_helpers import (
    GatewayClient,
    gateway_client,
    model,
    models_claim,
    module_namespace,
    pod_url,
    ready_pod,
)
from kube_helpers import apply, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CHAT, EMBED, CNN = "tiny-chat", "minilm", "small-cnn"
TEXTS = ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply."]
MESSAGES: Any = [{"role": "user", "content": "Tell me about the harbour."}]


@pytest.fixture(scope="module")
def served(stack: Any) -> Iterator[dict[str, Any]]:
    """The three models Ready on the real node and listed as ready by the gateway."""
    t0 = time.monotonic()
    with module_namespace(stack, "e2e-clients") as ns, models_claim(stack, ns) as weights:
        for md in (
            model(CHAT, "pvc://models/tiny-chat", "transformers", cpu="500m"),
            model(EMBED, "pvc://models/all-minilm-l6-v2", "sentence-transformers", cpu="500m"),
            model(CNN, "pvc://models/small-cnn", "torchscript"),
        ):
            apply(stack, md, ns)
        pods = {name: ready_pod(stack, ns, name, timeout=420) for name in (CHAT, EMBED, CNN)}
        gw = gateway_client(stack, ns)

        def all_ready() -> bool:
            r = httpx.get(f"{gw.base}/v1/models", headers=gw.headers, timeout=5)
            ready = {m["id"] for m in r.json()["data"] if m["ready"]}
            return ready == {CHAT, EMBED, CNN}

        wait_for(all_ready, 60, what="the gateway to list the three models as ready")
        print(f"\nthree models Ready and routed in {time.monotonic() - t0:.1f}s")
        yield {"ns": ns, "pods": pods, "gw": gw, "weights": weights}


def openai_client(gw: GatewayClient) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{gw.base}/v1", api_key="unused", default_headers=gw.headers,
                  timeout=60, max_retries=0)  # fmt: skip


def test_openai_lists_the_namespace_models(served: dict[str, Any]) -> None:
    listed = openai_client(served["gw"]).models.list()
    assert sorted(m.id for m in listed.data) == sorted([CHAT, EMBED, CNN])


def test_openai_chat_streams_through_the_gateway(served: dict[str, Any]) -> None:
    """Greedy decoding streamed through the gateway is the text the pod itself answers
    unstreamed: same tokens, same finish reason, usage counted once at the end."""
    from openai import OpenAI

    client = openai_client(served["gw"])
    stream = client.chat.completions.create(
        model=CHAT, messages=MESSAGES, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) >= 3, chunks  # a role chunk, content, a finish chunk at least
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}, "one completion id across the stream"
    assert {c.model for c in chunks} == {CHAT}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content or "" for c in with_choices]
    assert sum(1 for p in pieces if p) >= 2, pieces  # streamed in pieces, not in one
    text = "".join(pieces)
    finish = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0] in ("length", "stop"), finish
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices, chunks[-1]
    assert 1 <= usage.completion_tokens <= 16 and usage.prompt_tokens > 0, usage
    if finish[0] == "length":
        assert usage.completion_tokens == 16, usage

    direct = OpenAI(base_url=f"{pod_url(served['pods'][CHAT])}/v1", api_key="unused",
                    timeout=60, max_retries=0)  # fmt: skip
    once = direct.chat.completions.create(
        model=CHAT, messages=MESSAGES, max_tokens=16, temperature=0
    )
    assert once.choices[0].message.content == text
    assert once.choices[0].finish_reason == finish[0]
    assert once.usage is not None
    assert (once.usage.prompt_tokens, once.usage.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_openai_embeddings_through_the_gateway(served: dict[str, Any]) -> None:
    """The pod's embeddings, through the gateway, equal sentence-transformers run here on the
    same weights (cosine > 0.999) and the pod's own answer to the same request."""
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    resp = openai_client(served["gw"]).embeddings.create(model=EMBED, input=TEXTS)
    assert resp.model == EMBED and resp.object == "list"
    assert [d.index for d in resp.data] == [0, 1, 2]
    got = np.array([d.embedding for d in resp.data], dtype=np.float64)
    assert got.shape == (3, 384)
    assert resp.usage.prompt_tokens > len(TEXTS)

    ref = SentenceTransformer(str(served["weights"] / "all-minilm-l6-v2"), device="cpu")
    want = ref.encode(TEXTS)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 0.999, cos
    sim = got @ got.T
    assert sim[0, 1] > sim[0, 2]  # paraphrases are closer than unrelated text

    direct = OpenAI(base_url=f"{pod_url(served['pods'][EMBED])}/v1", api_key="unused",
                    timeout=60, max_retries=0)  # fmt: skip
    same = direct.embeddings.create(model=EMBED, input=TEXTS)
    np.testing.assert_allclose(np.array([d.embedding for d in same.data]), got, rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_openai_unknown_model_is_a_404_in_openai_shape(served: dict[str, Any]) -> None:
    import openai

    with pytest.raises(openai.NotFoundError) as err:
        openai_client(served["gw"]).embeddings.create(model="no-such-model", input=TEXTS[:1])
    assert "no-such-model" in str(err.value)


def cnn_reference(weights: Path, x: np.ndarray) -> np.ndarray:
    """The small CNN run here, on the file the pod loaded."""
    import torch

    with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of export
        warnings.simplefilter("ignore", FutureWarning)
        net = torch.jit.load(str(weights / "small-cnn" / "model.pt"), map_location="cpu")  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]


def test_tritonclient_binary_tensors_through_the_gateway(served: dict[str, Any]) -> None:
    import tritonclient.http as triton

    gw = served["gw"]
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32), dtype=np.float32)
    client = triton.InferenceServerClient(gw.host_port_path, connection_timeout=30,
                                          network_timeout=60)  # fmt: skip
    try:
        assert client.is_model_ready(CNN, headers=gw.headers)
        assert not client.is_model_ready("no-such-model", headers=gw.headers)
        meta = client.get_model_metadata(CNN, headers=gw.headers)
        inp = triton.InferInput("input__0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = triton.InferRequestedOutput("output__0", binary_data=True)
        result = client.infer(CNN, [inp], outputs=[out], headers=gw.headers)
    finally:
        client.close()
    assert meta["name"] == CNN
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"][0]["name"] == "output__0" and meta["outputs"][0]["datatype"] == "FP32"
    # the answer came back as binary tensor data (not JSON numbers): 2 x 10 float32
    output = result.get_output("output__0")
    assert output["parameters"]["binary_data_size"] == 2 * 10 * 4, output
    assert "data" not in output
    got = result.as_numpy("output__0")
    assert got.dtype == np.float32 and got.shape == (2, 10)
    np.testing.assert_allclose(got, cnn_reference(served["weights"], x), rtol=1e-4, atol=1e-5)


def test_kserve_v1_through_the_gateway(served: dict[str, Any]) -> None:
    gw = served["gw"]
    x = np.random.default_rng(11).standard_normal((3, 3, 32, 32), dtype=np.float32)
    with httpx.Client(base_url=gw.base, headers=gw.headers, timeout=60) as http:
        status = http.get(f"/v1/models/{CNN}")
        assert status.status_code == 200, status.text
        assert status.json() == {"name": CNN, "ready": True}
        r = http.post(f"/v1/models/{CNN}:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["predictions"], dtype=np.float32)
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, cnn_reference(served["weights"], x), rtol=1e-4, atol=1e-5)
    direct = httpx.post(f"{pod_url(served['pods'][CNN])}/v1/models/{CNN}:predict",
                        json={"instances": x.tolist()}, timeout=60)  # fmt: skip
    assert direct.json() == r.json()  # the gateway passed the pod's answer through unchanged
