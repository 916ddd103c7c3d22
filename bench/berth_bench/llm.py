"""`berth bench llm`: streaming chat, tokens/s and time to first token, Berth against peers.

Same tiny model (a random-weight Llama built locally, berth_runtime.llm.tiny), same
machine, one run; each server in turn, alone:

- berth: `berth-runtime serve --format transformers` (continuous batching, 32 slots);
- transformers-serve: `transformers serve --continuous-batching` (its own virtualenv);
- one-at-a-time: LitServe's OpenAISpec over the same transformers model with
  max_batch_size=1 (bench/peers/litserve_llm.py), standing in for KServe's Hugging Face
  server without vLLM, which is not on PyPI and likewise runs one generate() at a time.

Load: a closed loop of C clients (C = 1, 8, 32), each streaming /v1/chat/completions
with greedy decoding and max_tokens 64, over prompts picked so that greedy decoding
runs the full 64 tokens (no early end-of-sequence); every answer is compared with the
text model.generate gives in-process, so tokens/s counts real, correct tokens. TTFT is
the time to the first chunk that carries text.

Writes bench/results/llm-<date>[-smoke].json; prints tokens/s, TTFT p50/p99 and the
ratios the issue sets as goals. `--smoke` runs Berth alone, briefly (tests/bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from berth_bench import proc
from berth_bench.peers import REPO, PeerUnavailable, Server, ensure_venv
from berth_bench.runtime import free_port

RESULTS = REPO / "bench" / "results"
MODELS = Path.home() / ".cache" / "berth" / "bench-models"
NAME = "llm"
MAX_TOKENS = 64

PEERS = {
    "transformers-serve": Server(
        "transformers-serve", "transformers", "transformers-serve.txt", "continuous batching"
    ),
    "one-at-a-time": Server(
        "litserve-llm", "litserve", "litserve-llm.txt", "none (max_batch_size=1)"
    ),
}
SERVERS = ("berth", "transformers-serve", "one-at-a-time")


@dataclass(frozen=True)
class Settings:
    servers: tuple[str, ...] = SERVERS
    concurrency: tuple[int, ...] = (1, 8, 32)
    duration_s: float = 20.0
    warmup_s: float = 3.0
    smoke: bool = False
    out: Path = RESULTS


def parse(argv: list[str]) -> Settings:
    ap = argparse.ArgumentParser(prog="berth bench llm", description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per point")
    ap.add_argument("--smoke", action="store_true", help="Berth only, c=1,4, 6 s (for tests)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.smoke:
        return Settings(("berth",), (1, 4), 6.0, 2.0, True, a.out)
    servers = tuple(s for s in a.servers.split(",") if s)
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    conc = tuple(int(c) for c in a.concurrency.split(","))
    return Settings(servers, conc, a.duration, a.warmup, False, a.out)


def log(msg: str) -> None:
    print(f"[bench llm] {msg}", file=sys.stderr, flush=True)


# --- the model and the prompts ---------------------------------------------------------


def model_and_prompts() -> tuple[Path, list[dict[str, str]]]:
    """The bench model (cached) and prompts whose greedy answer runs the full MAX_TOKENS."""
    path = MODELS / "llm-tiny-h256-l4"
    prompts_file = path / "bench-prompts.json"
    if prompts_file.is_file():
        return path, json.loads(prompts_file.read_text())
    import torch
    from berth_runtime.llm.tiny import build
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"building the bench model in {path}")
    build(path, hidden=256, layers=4, heads=8, context=1024, seed=1)
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    chosen: list[dict[str, str]] = []
    for i in range(200):
        prompt = f"Request {i}: tell me about batching number {i * 7}."
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False)
        new = out[0, len(ids) :].tolist()
        if len(new) == MAX_TOKENS:
            chosen.append({"prompt": prompt, "answer": tok.decode(new, skip_special_tokens=True)})
        if len(chosen) == 16:
            break
    if not chosen:
        raise RuntimeError("no prompt ran the full length; change the seed")
    prompts_file.write_text(json.dumps(chosen, indent=1))
    return path, chosen


# --- servers -------------------------------------------------------------------------


def launch(name: str, model: Path, port: int) -> tuple[list[str], str, str]:
    """(command, readiness URL path, model field for requests)."""
    if name == "berth":
        cmd = [
            str(REPO / ".venv" / "bin" / "berth-runtime"),
            "serve",
            "--model-uri", str(model), "--format", "transformers", "--name", NAME,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-batch-size", "32", "--threads", "1", "--timeout-ms", "600000",
        ]  # fmt: skip
        return cmd, "/v2/health/ready", NAME
    peer = PEERS[name]
    py = ensure_venv(peer)
    if name == "transformers-serve":
        cmd = [
            str(py.with_name("transformers")), "serve", str(model),
            "--continuous-batching", "--device", "cpu", "--host", "127.0.0.1",
            "--port", str(port), "--cb-block-size", "16",
        ]  # fmt: skip
        return cmd, "/health", str(model)
    cmd = [str(py), str(REPO / "bench" / "peers" / "litserve_llm.py"), str(model), str(port)]
    return cmd, "/health", NAME


async def wait_ready(base: str, path: str, server: proc.Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            if not server.alive():
                raise PeerUnavailable(f"exited during start-up:\n{server.tail()}")
            try:
                if (await http.get(base + path)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise PeerUnavailable(f"not ready after {timeout_s:.0f} s:\n{server.tail()}")


# --- load ----------------------------------------------------------------------------


@dataclass
class Sample:
    ttft: float
    total: float
    ok: bool
    chunks: tuple[float, ...] = ()
    """Arrival times (perf_counter) of the chunks that carried text."""


async def one_request(
    http: httpx.AsyncClient, url: str, model: str, prompt: dict[str, str]
) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt["prompt"]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    parts: list[str] = []
    arrivals: list[float] = []
    async with http.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return Sample(0.0, time.perf_counter() - started, False)
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            for choice in doc.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    arrivals.append(time.perf_counter())
                    first = first or arrivals[-1] - started
                parts.append(text)
    # an incomplete UTF-8 tail ("\ufffd") is flushed by some servers and dropped by others
    ok = "".join(parts).rstrip("\ufffd") == prompt["answer"].rstrip("\ufffd")
    return Sample(first, time.perf_counter() - started, ok, tuple(arrivals))


async def load(
    base: str, model: str, prompts: list[dict[str, str]], c: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    url = base + "/v1/chat/completions"
    samples: list[Sample] = []
    errors = 0
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + duration_s)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < window[1]:
            try:
                s = await one_request(http, url, model, prompts[n % len(prompts)])
            except (httpx.HTTPError, ValueError):
                s = Sample(0.0, 0.0, False)
            n += c
            samples.append(s)
            errors += 0 if s.ok else 1

    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(c)))
    # Tokens streamed inside the window: each text chunk of a correct answer weighs
    # MAX_TOKENS / its number of chunks (servers hold back split characters differently).
    tokens = sum(
        MAX_TOKENS / len(s.chunks) * sum(window[0] <= t <= window[1] for t in s.chunks)
        for s in samples
        if s.ok and s.chunks
    )
    good = [s for s in samples if s.ok and s.chunks and window[0] <= s.chunks[0] <= window[1]]
    ttfts = sorted(s.ttft for s in good)

    def pct(q: float) -> float | None:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None

    return {
        "concurrency": c,
        "requests": len(good),
        "wrong_or_failed": errors,
        "output_tokens_per_s": tokens / duration_s,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p99_s": pct(0.99),
        "e2e_p50_s": statistics.median(s.total for s in good) if good else None,
    }


async def warm(base: str, model: str, prompt: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=600) as http:
        await one_request(http, base + "/v1/chat/completions", model, prompt)


def bench_server(
    name: str, model: Path, prompts: list[dict[str, str]], s: Settings
) -> list[dict[str, Any]]:
    port = free_port(1)
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        cmd, ready, model_field = launch(name, model, port)
    except PeerUnavailable as exc:
        return [{"server": name, "status": "failed", "reason": str(exc)}]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "berth-bench-llm"
    server = proc.Server(cmd, env=env, cwd=REPO, log=logs / f"{name}.log", cpus=None)
    try:
        asyncio.run(wait_ready(base, ready, server, 600))
        log(f"{name} ready on {base}; one unmeasured request (lazy start-up work)")
        asyncio.run(warm(base, model_field, prompts[0]))
        for c in s.concurrency:
            row = asyncio.run(load(base, model_field, prompts, c, s.warmup_s, s.duration_s))
            row = {"server": name, "status": "ok", **row}
            log(json.dumps(row))
            rows.append(row)
    except PeerUnavailable as exc:
        rows.append({"server": name, "status": "failed", "reason": str(exc)[-3000:]})
    finally:
        server.stop()
    return rows


# --- report --------------------------------------------------------------------------


def _at(rows: list[dict[str, Any]], server: str, c: int) -> dict[str, Any] | None:
    for r in rows:
        if r.get("server") == server and r.get("concurrency") == c and r.get("status") == "ok":
            return r
    return None


def goals(rows: list[dict[str, Any]], c: int = 32) -> list[dict[str, Any]]:
    berth, tserve, single = (_at(rows, n, c) for n in SERVERS)
    out: list[dict[str, Any]] = []
    if berth is None:
        return out

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if not a or not b else a / b

    if single is not None:
        r = ratio(berth["output_tokens_per_s"], single["output_tokens_per_s"])
        out.append({"goal": f"tokens/s at c={c} >= 3x one-at-a-time", "ratio": r,
                    "met": r is not None and r >= 3})  # fmt: skip
    if tserve is not None:
        r = ratio(berth["output_tokens_per_s"], tserve["output_tokens_per_s"])
        out.append({"goal": f"tokens/s at c={c} >= transformers serve", "ratio": r,
                    "met": r is not None and r >= 1})  # fmt: skip
        p_b, p_t = berth["ttft_p99_s"], tserve["ttft_p99_s"]
        out.append({"goal": f"TTFT p99 at c={c} below transformers serve's",
                    "berth_s": p_b, "peer_s": p_t,
                    "met": p_b is not None and p_t is not None and p_b < p_t})  # fmt: skip
    if single is not None:
        p_b, p_s = berth["ttft_p99_s"], single["ttft_p99_s"]
        out.append({"goal": f"TTFT p99 at c={c} below one-at-a-time's",
                    "berth_s": p_b, "peer_s": p_s,
                    "met": p_b is not None and p_s is not None and p_b < p_s})  # fmt: skip
    return out


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'server':20} {'c':>3} {'tok/s':>8} {'ttft p50':>9} {'ttft p99':>9} {'reqs':>5} {'bad':>4}"
    lines = [head]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['server']:20} failed: {str(r.get('reason'))[:100]}")
            continue
        lines.append(
            f"{r['server']:20} {r['concurrency']:>3} {_f(r['output_tokens_per_s']):>8} "
            f"{_f(r['ttft_p50_s']):>9} {_f(r['ttft_p99_s']):>9} {r['requests']:>5} "
            f"{r['wrong_or_failed']:>4}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    s = parse(argv)
    model, prompts = model_and_prompts()
    rows: list[dict[str, Any]] = []
    for name in s.servers:
        log(f"benchmarking {name}")
        rows += bench_server(name, model, prompts, s)
    result = {
        "bench": "llm",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {**asdict(s), "out": str(s.out), "max_tokens": MAX_TOKENS},
        "model": {"path": str(model), "shape": "Llama, hidden 256, 4 layers, 8 heads, vocab ~512"},
        "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
        "peers": {
            n: {"package": p.package, "version": p.pinned_version(), "batching": p.batching}
            for n, p in PEERS.items()
        },
        "rows": rows,
        "goals": goals(rows),
    }
    s.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = s.out / f"llm-{stamp}{'-smoke' if s.smoke else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    for g in result["goals"]:
        print(json.dumps(g))
    print(f"wrote {path}")
    bad = [r for r in rows if r.get("status") != "ok" and r.get("server") == "berth"]
    return 1 if bad or not any(r.get("requests") for r in rows if r.get("server") == "berth") else 0
