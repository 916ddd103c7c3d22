"""`berth bench runtime`: Berth's runtime against KServe, LitServe, TorchServe and Ray Serve.

For each model (ResNet-18-shaped CNN, MiniLM embeddings, a trivial identity) and each
server, start the server pinned to the server CPUs, check it answers, then drive it with
the one closed-loop load generator (`berth_bench.loadgen`, pinned to its own CPU) at each
concurrency: warm-up, then a fixed measured window. Two references: a bare ASGI hello on
uvicorn (the HTTP floor) and the model called in-process at its best batch size (the
compute ceiling). Writes bench/results/runtime-<date>.json and a PNG, prints a table.

    berth bench runtime --quick     # one concurrency level, short windows (<= 5 min warm)
    berth bench runtime             # concurrency 1, 8, 32, 128
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from berth_bench import models as M
from berth_bench import peers as P
from berth_bench import proc, report

RESULTS = P.BENCH / "results"
# Window multipliers per model: on one CPU core a CNN batch of 32 takes seconds, so its
# warm-up and window must span several batches to measure anything.
TIME_SCALE = {"cnn": 4.0, "embedding": 1.0, "trivial": 1.0}


@dataclass
class Settings:
    """What one run does. Every server gets the same CPUs, processes and threads."""

    quick: bool = False
    models: tuple[str, ...] = M.MODELS
    servers: tuple[str, ...] = ("berth", *P.PEERS, "uvicorn-hello")
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    warmup_s: float = 5.0  # unrecorded seconds before each window
    duration_s: float = 15.0  # measured seconds per (server, model, concurrency)
    threads: int = 1  # torch intra-op threads in every server (and the ceiling)
    workers: int = 1  # server worker processes (model replicas) for every server
    max_batch: int = 32  # dynamic batching: max batch size, where a server has it
    max_delay_ms: float = 5.0  # dynamic batching: max wait for a batch to fill
    device: str = "cpu"  # cpu | cuda
    server_cpus: str = "1"  # taskset list for the servers and the ceiling
    loadgen_cpus: str = "0"  # taskset list for the load generator
    nice: int = -5 if os.geteuid() == 0 else 0  # priority over a shared machine's builds
    start_timeout_s: float = 300.0  # a server that is not answering by then has failed
    berth_wait_s: float = 0.0  # wait this long for berth-runtime to appear
    ceiling_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    ceiling_s: float = 2.0
    out: Path = RESULTS


def parse(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(
        prog="berth bench runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="c=32 only, short windows")
    p.add_argument("--models", help=f"comma list from {','.join(M.MODELS)}")
    p.add_argument("--servers", help="comma list from " + ",".join(P.SERVERS))
    p.add_argument("--concurrency", help="comma list, e.g. 1,8,32,128")
    p.add_argument("--duration", type=float, help="measured seconds per point")
    p.add_argument("--warmup", type=float, help="warm-up seconds per point")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--server-cpus", default="1", help="taskset CPU list for servers")
    p.add_argument("--loadgen-cpus", default="0", help="taskset CPU list for the load gen")
    p.add_argument(
        "--nice",
        type=int,
        default=Settings.nice,
        help="nice value for servers, ceiling and load generator "
        "(default -5 as root: the measured processes win over a busy "
        "machine's background work)",
    )
    p.add_argument(
        "--berth-wait", type=float, default=0.0, help="seconds to wait for berth-runtime to exist"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    s = Settings(
        quick=a.quick,
        threads=a.threads,
        device=a.device,
        server_cpus=a.server_cpus,
        loadgen_cpus=a.loadgen_cpus,
        berth_wait_s=a.berth_wait,
        out=a.out,
        nice=a.nice,
    )
    if a.quick:
        s.concurrency, s.warmup_s, s.duration_s = (32,), 2.0, 4.0
        s.ceiling_batches, s.ceiling_s = (1, 8, 32), 1.0
    if a.models:
        s.models = tuple(a.models.split(","))
    if a.servers:
        s.servers = tuple(a.servers.split(","))
    if a.concurrency:
        s.concurrency = tuple(int(c) for c in a.concurrency.split(","))
    if a.duration:
        s.duration_s = a.duration
    if a.warmup is not None:
        s.warmup_s = a.warmup
    if s.device == "cuda":  # a GPU server is not pinned; the ceiling runs on the GPU too
        s.server_cpus = ""
    return s


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(span: int = 3) -> int:
    """A port p such that p..p+span-1 are free now (TorchServe takes three)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + span > 65535:
            continue
        try:
            for off in range(1, span):
                with socket.socket() as s2:
                    s2.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    variant: str  # "json", "oip-json", "oip-binary", "openai"
    label: str
    path: str
    body: bytes
    headers: dict[str, str]


def targets(server: str, model: str, name: str, url_path: str) -> list[Target]:
    if server == "berth":
        js = M.oip_json(model, name)
        out = [Target("oip-json", "berth (OIP JSON)", js.path, js.body, js.headers)]
        if model == "embedding":
            oa = M.openai_embeddings(name)
            out.append(Target("openai", "berth (OpenAI embeddings)", oa.path, oa.body, oa.headers))
        else:
            b = M.oip_binary(model, name)
            out.append(Target("oip-binary", "berth (OIP binary)", b.path, b.body, b.headers))
        return out
    return [
        Target(
            "json", server, url_path, M.peer_payload(model), {"Content-Type": "application/json"}
        )
    ]


# --------------------------------------------------------------------------- runs


def run_loadgen(
    url: str,
    t: Target,
    c: int,
    s: Settings,
    server: proc.Server | None,
    tmp: Path,
    scale: float = 1.0,
) -> dict[str, Any]:
    duration, warmup = s.duration_s * scale, s.warmup_s * scale
    body_file = tmp / f"body-{abs(hash(t.body))}.bin"
    if not body_file.exists():
        body_file.write_bytes(t.body)
    cmd = [
        *proc.prefix(s.loadgen_cpus, s.nice),
        str(P.MAIN_PY),
        "-m",
        "berth_bench.loadgen",
        url,
        "--body-file",
        str(body_file),
        "-c",
        str(c),
        "-d",
        str(duration),
        "-w",
        str(warmup),
        "--timeout",
        "120",
    ]
    for k, v in t.headers.items():
        cmd += ["--header", f"{k}: {v}"]
    lg = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=P.BENCH
    )
    assert lg.stdout is not None
    before: dict[int, float] = {}
    cpu = float("nan")
    result: dict[str, Any] = {}
    for line in lg.stdout:
        line = line.strip()
        if line == "MEASURE_START" and server:
            before = server.snapshot()
        elif line == "MEASURE_END" and server:
            cpu = proc.cpu_delta(before, server.snapshot())
        elif line.startswith("{"):
            result = json.loads(line)
    err = lg.stderr.read() if lg.stderr else ""
    lg.wait()
    if not result:
        raise RuntimeError(f"load generator failed: {err.strip()[-500:]}")
    ok = result["requests"] - result["errors"]
    result["server_cpu_s"] = cpu
    result["server_cpu_s_per_1k"] = cpu / ok * 1000 if ok else float("nan")
    result["loadgen_cpu_util"] = result["loadgen_cpu_s"] / duration
    result["error_rate"] = result["errors"] / result["requests"] if result["requests"] else 0
    return result


def wait_ready(server: proc.Server, url: str, t: Target, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise P.PeerUnavailable(
                    f"server exited with code {server.proc.returncode}: {server.tail(1500).strip()}"
                )
            try:
                r = client.post(url, content=t.body, headers=t.headers)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1.0)
    raise P.PeerUnavailable(
        f"not answering after {timeout_s:.0f}s (last: {last}); log tail: {server.tail(800).strip()}"
    )


def bench_server(name: str, model: M.Model, s: Settings, tmp: Path) -> list[dict[str, Any]]:
    srv = P.SERVERS[name]
    served = f"bench-{model.kind}"
    rows: list[dict[str, Any]] = []

    def failed(reason: str, tlist: list[Target] | None = None) -> list[dict[str, Any]]:
        labels = [(t.variant, t.label) for t in (tlist or [])] or [("json", name)]
        return [
            {
                "server": name,
                "variant": v,
                "label": lab,
                "model": model.kind,
                "concurrency": c,
                "status": "failed",
                "reason": reason,
            }
            for v, lab in labels
            for c in s.concurrency
        ]

    try:
        P.ensure_venv(srv)
        workdir = tmp / f"{name}-{model.kind}"
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        ln = P.launch(
            srv,
            model,
            name=served,
            port=port,
            threads=s.threads,
            device=s.device,
            max_batch=s.max_batch,
            max_delay_ms=s.max_delay_ms,
            n_cpus=max(1, len(s.server_cpus.split(","))),
            workdir=workdir,
        )
    except P.PeerUnavailable as exc:
        return failed(str(exc))
    tlist = targets(name, model.kind, served, ln.url_path)
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    server = proc.Server(
        ln.cmd,
        env=ln.env,
        cwd=ln.cwd,
        log=workdir / "server.log",
        cpus=s.server_cpus or None,
        nice=s.nice,
    )
    try:
        try:
            wait_ready(server, base + tlist[0].path, tlist[0], s.start_timeout_s)
        except P.PeerUnavailable as exc:
            return failed(str(exc), tlist)
        pids = server.pin()
        log(
            f"{name}/{model.kind} ready in {time.monotonic() - t0:.1f}s; {len(pids)} "
            f"processes pinned to CPUs [{s.server_cpus}]"
        )
        for t in tlist:
            try:
                wait_ready(server, base + t.path, t, 30)
            except P.PeerUnavailable as exc:
                rows += failed(str(exc), [t])
                continue
            for c in s.concurrency:
                try:
                    scale = TIME_SCALE.get(model.kind, 1.0) if s.device == "cpu" else 1.0
                    res = run_loadgen(base + t.path, t, c, s, server, tmp, scale)
                except RuntimeError as exc:
                    rows.append({**failed(str(exc), [t])[0], "concurrency": c})
                    continue
                row = {
                    "server": name,
                    "variant": t.variant,
                    "label": t.label,
                    "model": model.kind,
                    "concurrency": c,
                    "status": "ok",
                    **res,
                }
                rows.append(row)
                log(
                    f"  {t.label:26} c={c:<4} {res['rps']:9.1f} req/s  p99 "
                    f"{res['p99_ms']:8.1f} ms  errors {res['errors']}"
                    + (f" ({res['first_error']})" if res["errors"] else "")
                )
    finally:
        server.stop()
    return rows


def ceiling(model: M.Model, s: Settings) -> dict[str, Any]:
    cmd = [
        *proc.prefix(s.server_cpus, s.nice),
        str(P.MAIN_PY),
        "-m",
        "berth_bench.inprocess",
        "--kind",
        model.kind,
        "--path",
        str(model.path),
        "--threads",
        str(s.threads),
        "--device",
        s.device,
        "--batch-sizes",
        ",".join(map(str, s.ceiling_batches)),
        "--seconds",
        str(s.ceiling_s),
    ]
    env = P.base_env(model, "ceiling", 0, s.threads, s.device, s.max_batch, s.max_delay_ms)
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=P.BENCH, env=env)
    if res.returncode != 0:
        return {"error": res.stderr.strip()[-800:]}
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def loadgen_ceiling(s: Settings, tmp: Path) -> dict[str, Any]:
    """The load generator's own max rate: against a canned-response server (cheaper per
    request than any real server) on the server CPUs, at concurrency 32."""
    port = free_port(1)
    srv = proc.Server(
        [str(P.MAIN_PY), "-m", "berth_bench.canned", str(port)],
        env=dict(os.environ),
        cwd=P.BENCH,
        log=tmp / "canned.log",
        cpus=s.server_cpus or None,
        nice=s.nice,
    )
    try:
        time.sleep(1.0)
        srv.pin()
        t = Target(
            "json", "canned", "/", M.peer_payload("trivial"), {"Content-Type": "application/json"}
        )
        res = run_loadgen(
            f"http://127.0.0.1:{port}/",
            t,
            32,
            Settings(**{**asdict(s), "duration_s": 3.0, "warmup_s": 1.0}),
            srv,
            tmp,
        )
        return {
            k: res[k]
            for k in ("rps", "p50_ms", "p99_ms", "errors", "loadgen_cpu_util", "server_cpu_s")
        }
    finally:
        srv.stop()


def environment(s: Settings) -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers: dict[str, Any] = {}
    for name in s.servers:
        srv = P.SERVERS[name]
        if srv.python().exists():
            vers[name] = P.versions(srv)
    try:
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=P.REPO
        ).stdout.strip()
    except OSError:
        git = ""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus_online": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "git_commit": git,
        "versions": vers,
        "load_generator": "berth_bench.loadgen (Python, uvloop + httptools, closed loop, "
        "keep-alive, one process)",
    }


def main(argv: list[str]) -> int:
    s = parse(argv)
    t_start = time.monotonic()
    date = dt.date.today().isoformat()
    s.out.mkdir(parents=True, exist_ok=True)
    log(
        f"servers pinned to CPUs [{s.server_cpus or 'any'}], load generator to "
        f"[{s.loadgen_cpus or 'any'}]; {s.workers} worker process and {s.threads} torch "
        f"thread(s) per server; batching max {s.max_batch} / {s.max_delay_ms:g} ms"
    )
    if "berth" in s.servers and s.berth_wait_s > 0:
        exe = P.REPO / ".venv" / "bin" / "berth-runtime"
        deadline = time.monotonic() + s.berth_wait_s
        while not exe.exists() and time.monotonic() < deadline:
            time.sleep(10)
    rows: list[dict[str, Any]] = []
    ceilings: dict[str, Any] = {}
    lg: dict[str, Any] = {}
    env_info = environment(s)

    def write(done: bool) -> tuple[Path, list[Any], list[Any]]:
        ceil_rps = {k: v["best"] for k, v in ceilings.items() if "best" in v}
        ceil_cpu = {
            k: v["best_cpu_s_per_1k"] for k, v in ceilings.items() if "best_cpu_s_per_1k" in v
        }
        table = report.ratios(rows, ceil_rps, list(s.models), ceiling_cpu=ceil_cpu)
        goal_rows = report.goals(table)
        doc = {
            "benchmark": "runtime",
            "date": date,
            "mode": "quick" if s.quick else "full",
            "settings": {**asdict(s), "out": str(s.out)},
            "setup": {
                "pinning": f"every server started unpinned, then its whole process tree pinned "
                f"to CPUs [{s.server_cpus}] once it answers, before any measurement; "
                f"load generator pinned to [{s.loadgen_cpus}]; nice {s.nice}",
                "worker_processes": s.workers,
                "torch_threads": s.threads,
                "batching": {n: P.SERVERS[n].batching for n in s.servers},
                "request_bodies": "peers: KServe v1 JSON {'instances': [x]}; Berth: OIP v2 "
                "JSON, OIP v2 binary tensors, OpenAI embeddings",
            },
            "environment": env_info,
            "load_generator_ceiling": lg,
            "in_process_ceiling": ceilings,
            "results": rows,
            "ratios": table,
            "goals": goal_rows,
            "elapsed_s": round(time.monotonic() - t_start, 1),
        }
        out_json = s.out / f"runtime-{date}{'-quick' if s.quick else ''}.json"
        doc["complete"] = done
        out_json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        return out_json, table, goal_rows

    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmpname:
        tmp = Path(tmpname)
        lg = loadgen_ceiling(s, tmp)
        log(
            f"load generator ceiling: {lg['rps']:.0f} req/s at c=32 "
            f"(its CPU {100 * lg['loadgen_cpu_util']:.0f}% busy)"
        )
        for kind in s.models:
            model = M.prepare(kind)
            if kind != "trivial":
                ceilings[kind] = ceiling(model, s)
                log(f"{kind} in-process ceiling: {ceilings[kind]}")
            for name in s.servers:
                if name == "uvicorn-hello" and kind != "trivial":
                    continue
                rows += bench_server(name, model, s, tmp)
                write(False)  # partial results survive an interrupted run
    out_json, table, goal_rows = write(True)
    png = out_json.with_suffix(".png")
    try:
        report.plot(rows, list(s.models), png)
    except Exception as exc:  # the plot is a convenience; never lose the JSON for it
        log(f"plot failed: {exc}")
    print(report.format_rows(rows))
    print()
    print(f"Load generator ceiling: {lg['rps']:.0f} req/s (c=32, canned server)")
    print(report.format_ratios(table, goal_rows))
    print(f"\nwrote {out_json} and {png} in {time.monotonic() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
