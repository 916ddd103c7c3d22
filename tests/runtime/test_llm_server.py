"""Format transformers through a real ``berth-runtime`` process and the official openai client.

The model is a tiny random-weight Llama with a BPE tokenizer and a chat template, built
in the test (berth_runtime.llm.tiny; nothing is downloaded). Two servers: a roomy one
(32 running slots) and a tight one (1 slot, 1 queued, 500 ms deadline) for 429 and 504.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from berth_runtime.llm.tiny import build
from prometheus_client.parser import text_string_to_metric_families
from runtime_helpers import Server

pytestmark = pytest.mark.integration

NAME = "tiny"
CONTEXT = 512


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("llm") / "tiny", context=CONTEXT)


@pytest.fixture(scope="module")
def servers(llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    logs = tmp_path_factory.mktemp("llm-logs")
    base = ["--model-uri", str(llm_dir), "--format", "transformers", "--name", NAME]
    started = {
        "roomy": Server([*base, "--max-batch-size", "32"], logs / "roomy.log"),
        "tight": Server(
            [*base, "--max-batch-size", "1", "--max-queue", "1", "--timeout-ms", "500"],
            logs / "tight.log",
        ),
        # one slot, one queue place and a long deadline: the 429 test must not race the
        # deadline (with 500 ms, a loaded machine let the first request time out and free
        # the queue before the third arrived)
        "queue": Server(
            [*base, "--max-batch-size", "1", "--max-queue", "1", "--timeout-ms", "60000"],
            logs / "queue.log",
        ),
    }
    try:
        for s in started.values():
            s.wait_ready(timeout=300)
        yield started
    finally:
        for s in started.values():
            s.stop()


@pytest.fixture(scope="module")
def roomy(servers: dict[str, Server]) -> Server:
    return servers["roomy"]


@pytest.fixture(scope="module")
def tight(servers: dict[str, Server]) -> Server:
    return servers["tight"]


@pytest.fixture(scope="module")
def queue(servers: dict[str, Server]) -> Server:
    return servers["queue"]


@pytest.fixture(scope="module")
def client(roomy: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{roomy.url}/v1", api_key="unused", max_retries=0, timeout=120)


def metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(server: Server, name: str, **labels: str) -> float:
    want = tuple(sorted({"model": NAME, **labels}.items()))
    return metrics(server)[(name, want)]


MESSAGES: Any = [{"role": "user", "content": "hello, how are you?"}]


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [NAME]


def test_chat_and_completion_with_the_openai_client(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8)
    assert chat.object == "chat.completion"
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert chat.usage is not None and 1 <= chat.usage.completion_tokens <= 8
    assert chat.usage.prompt_tokens > 0
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    done = client.completions.create(model=NAME, prompt="The quick brown", max_tokens=5)
    assert done.object == "text_completion"
    assert isinstance(done.choices[0].text, str)
    assert done.usage is not None and done.usage.completion_tokens <= 5


def test_streaming_matches_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=24, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=NAME,
            messages=MESSAGES,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # usage last, when asked
    assert all(c.usage is None for c in chunks[:-1])

    stream = client.completions.create(model=NAME, prompt="Hello", max_tokens=6, stream=True)
    pieces = list(stream)
    assert pieces and all(p.object == "text_completion" for p in pieces)
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")


def test_greedy_equals_model_generate(client: openai.OpenAI, llm_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(llm_dir), local_files_only=True).eval()

    def generate(ids: list[int], n: int) -> list[int]:
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
        return [int(t) for t in out[0, len(ids) :]]

    prompt = "Continuous batching lets"
    ids = tok(prompt)["input_ids"]
    expected = generate(ids, 32)
    got = client.completions.create(model=NAME, prompt=prompt, max_tokens=32, temperature=0, seed=7)
    assert got.usage is not None and got.usage.completion_tokens == len(expected)
    assert got.choices[0].text == tok.decode(expected, skip_special_tokens=True)

    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    chat_ids = tok(text, add_special_tokens=False)["input_ids"]
    expected = generate(chat_ids, 32)
    chat = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=32, temperature=0, seed=7
    )
    assert chat.usage is not None and chat.usage.prompt_tokens == len(chat_ids)
    assert chat.choices[0].message.content == tok.decode(expected, skip_special_tokens=True)


def test_a_seed_repeats_sampling_whatever_runs_beside_it(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        r = client.completions.create(
            model=NAME, prompt="Hello world", max_tokens=24, temperature=1.0, top_p=0.9, seed=seed
        )
        return r.choices[0].text

    alone = ask(123)
    with cf.ThreadPoolExecutor(6) as pool:
        crowd = list(pool.map(ask, [123, 1, 2, 123, 3, 4]))
    assert crowd[0] == crowd[3] == alone
    assert len({alone, *crowd[1:3], *crowd[4:]}) > 1  # other seeds sample differently


def test_sixteen_streams_share_forward_passes(client: openai.OpenAI, roomy: Server) -> None:
    before = metric(roomy, "berth_llm_forward_passes_total")

    def stream(i: int) -> int:
        usage = None
        for chunk in client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": f"request {i}"}],
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            usage = chunk.usage or usage
        assert usage is not None
        return usage.completion_tokens

    with cf.ThreadPoolExecutor(16) as pool:
        tokens = sum(pool.map(stream, range(16)))
    passes = metric(roomy, "berth_llm_forward_passes_total") - before
    # One request at a time needs at least one pass per generated token.
    assert tokens >= 16 * 8
    assert passes < tokens / 4, f"{passes} passes for {tokens} tokens: no batching"


def long_prompt(server: Server) -> str:
    """A prompt that greedy decoding continues for 480 tokens (no end-of-sequence token)."""
    for prompt in ("hello", "Hello world", "The quick brown fox", "numbers 0 1 2"):
        body = {"model": NAME, "prompt": prompt, "max_tokens": 480, "temperature": 0}
        r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
        if r.json()["choices"][0]["finish_reason"] == "length":
            return prompt
    raise AssertionError("every prompt hit end-of-sequence; pick others")


def test_a_disconnect_frees_the_slot_at_once(roomy: Server) -> None:
    aborted = metric(roomy, "berth_llm_requests_total", finish_reason="abort")
    prompt = long_prompt(roomy)
    body = {"model": NAME, "prompt": prompt, "max_tokens": 480, "temperature": 0, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{roomy.url}/v1/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        lines = resp.iter_lines()  # kept: leaving the iterator early closes the connection
        while not next(lines).startswith('data: {"id"'):
            pass
        assert metric(roomy, "berth_llm_requests_running") == 1
    # the connection is closed: the request leaves the batch before it could finish (3 s:
    # 480 tokens take far longer on this machine, so a finished request cannot pass for it)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if metric(roomy, "berth_llm_requests_running") == 0:
            break
        time.sleep(0.05)
    assert metric(roomy, "berth_llm_requests_running") == 0
    assert metric(roomy, "berth_llm_requests_total", finish_reason="abort") == aborted + 1
    # nothing is generating: a request run now takes exactly its own passes (one per token
    # after the first, plus the prefill), none left over from the aborted one
    passes = metric(roomy, "berth_llm_forward_passes_total")
    body = {"model": NAME, "prompt": prompt, "max_tokens": 4, "temperature": 0}
    r = httpx.post(f"{roomy.url}/v1/completions", json=body, timeout=60)
    assert r.json()["usage"]["completion_tokens"] == 4
    assert metric(roomy, "berth_llm_forward_passes_total") - passes == 4


LONG_PROMPT = "hello world " * 400


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        # unsupported OpenAI parameters are named, not ignored
        ("chat/completions", {"messages": MESSAGES, "logprobs": True}, 400, "logprobs"),
        ("completions", {"prompt": "x", "best_of": 3}, 400, "best_of"),
        ("chat/completions", {"messages": MESSAGES, "n": 3}, 400, "n must be 1"),
        # the context caps the prompt and max_tokens, naming the limit
        ("completions", {"prompt": "hi", "max_tokens": 10_000}, 400, f"context of {CONTEXT}"),
        ("completions", {"prompt": LONG_PROMPT}, 400, f"context is {CONTEXT} tokens"),
        ("completions", {"prompt": [1, 10**9]}, 400, "vocabulary"),  # ids past the vocabulary
        ("chat/completions", {"messages": []}, 400, "messages"),
        ("chat/completions", {"messages": MESSAGES, "temperature": -1}, 400, "temperature"),
        ("chat/completions", {"messages": MESSAGES, "model": "other"}, 404, "not served"),
    ],
)
def test_bad_inputs_get_openai_errors(
    roomy: Server, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    r = httpx.post(f"{roomy.url}/v1/{path}", json={"model": NAME, **body}, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert fragment in error["message"] and error["code"] == status


def test_the_openai_client_sees_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model=NAME, messages=MESSAGES, presence_penalty=1.0)


def test_a_full_queue_answers_429_with_retry_after(queue: Server) -> None:
    body = {"model": NAME, "prompt": "hello", "max_tokens": 480, "temperature": 0, "stream": True}
    url = f"{queue.url}/v1/completions"
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", url, json=body) as one,
        http.stream("POST", url, json=body) as two,
    ):
        assert (one.status_code, two.status_code) == (200, 200)  # one running, one queued
        third = httpx.post(url, json={**body, "stream": False}, timeout=30)
        assert third.status_code == 429, third.text
        assert third.headers["retry-after"] == "1"
        assert "--max-queue" in third.json()["error"]["message"]


def test_the_deadline_ends_a_generation(tight: Server) -> None:
    body = {"model": NAME, "prompt": "hello", "max_tokens": 480, "temperature": 0}
    r = httpx.post(f"{tight.url}/v1/completions", json=body, timeout=30)
    assert r.status_code == 504 and "--timeout-ms" in r.json()["error"]["message"]
    # once streaming, the status is sent: the error arrives as the last event
    with httpx.stream(
        "POST", f"{tight.url}/v1/completions", json={**body, "stream": True}, timeout=30
    ) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert resp.status_code == 200
    assert json.loads(events[-1])["error"]["code"] == 504
    assert "[DONE]" not in events
    deadline = time.monotonic() + 3
    while metric(tight, "berth_llm_requests_running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(tight, "berth_llm_requests_running") == 0


def test_metrics_carry_token_counts_and_inference_extension_names(roomy: Server) -> None:
    # its own request (alone or in any order): the counters grow by exactly its usage
    label = (("model", NAME),)
    names = ["berth_llm_generation_tokens_total", "berth_llm_prompt_tokens_total",
             "berth_llm_time_to_first_token_seconds_count",
             "berth_llm_e2e_request_latency_seconds_count"]  # fmt: skip
    before = metrics(roomy)
    body = {"model": NAME, "prompt": "hello", "max_tokens": 6, "temperature": 0}
    usage = httpx.post(f"{roomy.url}/v1/completions", json=body, timeout=60).json()["usage"]
    m = metrics(roomy)
    grown = {n: m[(n, label)] - before.get((n, label), 0) for n in names}
    assert grown == {
        "berth_llm_generation_tokens_total": usage["completion_tokens"],
        "berth_llm_prompt_tokens_total": usage["prompt_tokens"],
        "berth_llm_time_to_first_token_seconds_count": 1,
        "berth_llm_e2e_request_latency_seconds_count": 1,
    }
    assert m[("berth_llm_time_per_output_token_seconds_count", label)] > 0
    for name in (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    ):
        assert m[(name, (("model_name", NAME),))] == 0
    assert m[("berth_inflight_requests", label)] == 0
