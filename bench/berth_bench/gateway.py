"""`berth bench gateway`: the cost of the gateway hop, same machine, same run.

For each model (trivial identity, MiniLM embeddings) one `berth-runtime serve` process,
and one `berth-runtime gateway --static <model>=<runtime address>` in front of it (the
same proxy code as in the cluster; static routes instead of Kubernetes discovery).

How it measures, so that the two paths are comparable on a small, shared machine:
- the runtime and the load generator are pinned (taskset) and niced the same way for both
  paths, and one load generator process drives both; the gateway (niced alike) shares the
  core where it disturbs the comparison least (`gateway_cpus`: the runtime's at c=1, the
  load generator's above);
- at each concurrency (1 and 32) both paths are warmed up, then measured in interleaved
  windows, ABBA (direct, gateway, gateway, direct, ...), over connections kept open, so a
  change of the machine's background load hits both alike;
- the figures are medians over rounds with their [min, max]: added p50 is the median of
  the per-round differences (goal <= 1 ms at c=1); gateway requests per second per CPU
  core from the gateway process' own CPU time in its windows (goal >= 2,500; Knative's
  activator is documented at roughly 2,500 rps per vCPU); ratios against the peer (the
  direct path); the runtime's own CPU per request on each path (equal when both paths
  gave it the same work), the load generator's CPU share (flagged above 80%), and the
  gateway's own time per request from its `berth_gateway_overhead_seconds` histogram
  (the part of the added latency that is the proxy's code rather than the scheduling of
  one more process on a busy machine).

Cold start (goal <= 1 s of overhead: first request to its response minus the model's
own load time) needs Kubernetes: `berth bench coldstart` (coldstart.py) measures it on
the running dev cluster, phase by phase; this benchmark's summary runs it once when the
dev cluster runs, else reports the newest bench/results/coldstart-*.json.

    berth bench gateway --smoke     # trivial model, c=1 and 32, 3 rounds of 1 s (< 1 min)
    berth bench gateway             # trivial + embedding, 6 rounds of 2 s (embedding 12)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from berth_bench import coldstart, proc, report
from berth_bench import models as M
from berth_bench import peers as P
from berth_bench.runtime import Settings as RuntimeSettings
from berth_bench.runtime import Target, free_port, log, targets, wait_ready

RESULTS = P.BENCH / "results"
GOALS = {"added_p50_ms": 1.0, "gateway_rps_per_core": 2500.0, "cold_start_overhead_s": 1.0}
LABELS = ("direct", "gateway")
OVERHEAD = "berth_gateway_overhead_seconds"  # the gateway's own time per request
# Rounds multipliers: an embedding takes milliseconds to tens of milliseconds on a busy
# CPU, so it gets more rounds (more requests for its medians; smoke: 1x). More rounds
# rather than longer windows: in ABBA order a path idles for two windows, and its
# keep-alive connections must outlive that (uvicorn closes them after 5 s idle).
ROUNDS_SCALE = {"embedding": 2}


def parse(argv: list[str]) -> tuple[argparse.Namespace, RuntimeSettings]:
    ap = argparse.ArgumentParser(prog="berth bench gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="trivial model only, 3 rounds of 1 s")
    ap.add_argument("--models", default="", help="comma-separated: trivial,embedding")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--rounds", type=int, help="windows per path (default 6; smoke 3)")
    ap.add_argument("--duration", type=float, help="seconds per window (default 2; smoke 1)")
    ap.add_argument("--warmup", type=float, help="seconds per path first (default 3; smoke 1)")
    ap.add_argument("--server-cpus", default="1", help="taskset list for the runtime")
    ap.add_argument("--gateway-cpus", default="auto",
                    help="taskset list for the gateway; auto (default): the runtime's CPUs at "
                    "c=1, the load generator's above (see the module's doc)")  # fmt: skip
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    models = tuple(m for m in a.models.split(",") if m) or (
        ("trivial",) if a.smoke else ("trivial", "embedding")
    )
    a.rounds = a.rounds or (3 if a.smoke else 6)
    s = RuntimeSettings(
        quick=a.smoke,
        models=models,
        servers=("berth",),
        concurrency=tuple(int(c) for c in a.concurrency.split(",")),
        warmup_s=a.warmup if a.warmup is not None else (1.0 if a.smoke else 3.0),
        duration_s=a.duration or (1.0 if a.smoke else 2.0),
        server_cpus=a.server_cpus,
        loadgen_cpus=a.loadgen_cpus,
        out=a.out,
    )
    return a, s


def gateway_cpus(choice: str, c: int, s: RuntimeSettings) -> str:
    """Where the gateway runs. A 2-core machine has no core for it alone, so it shares the
    one where it disturbs the comparison least. At c=1 the runtime and the gateway never
    run at the same time (the runtime is idle while the gateway forwards), so it shares
    the runtime's: the client's core is then the same as on the direct path (sharing the
    client's, the client's next request waits for the gateway's end-of-response work,
    which a client on another machine never does). At higher concurrency both are busy at
    once, so it shares the client's and the runtime keeps its core as on the direct path."""
    if choice != "auto":
        return choice
    return s.server_cpus if c == 1 else s.loadgen_cpus


def _start_gateway(
    model: str, runtime_port: int, cpus: str, nice: int, tmp: Path
) -> tuple[proc.Server, str]:
    port = free_port(1)
    exe = P.REPO / ".venv" / "bin" / "berth-runtime"
    cmd = [str(exe), "gateway", "--host", "127.0.0.1", "--port", str(port),
           "--static", f"{model}=127.0.0.1:{runtime_port}", "--log-level", "warning"]  # fmt: skip
    server = proc.Server(cmd, env=dict(os.environ), cwd=tmp, log=tmp / f"gateway-{model}.log",
                         cpus=cpus or None, nice=nice)  # fmt: skip
    return server, f"http://127.0.0.1:{port}"


def interleaved(
    kind: str,
    metrics_url: str,
    urls: dict[str, str],
    t: Target,
    c: int,
    a: argparse.Namespace,
    s: RuntimeSettings,
    servers: dict[str, proc.Server],
    tmp: Path,
) -> list[dict[str, Any]]:
    """One load generator process: warm-up on both paths, then ABBA windows. Each
    window gets the CPU time of every server process during it."""
    body_file = tmp / f"body-{abs(hash(t.body))}.bin"
    body_file.write_bytes(t.body)
    d, g = LABELS
    rounds = a.rounds * (1 if a.smoke else ROUNDS_SCALE.get(kind, 1))
    cmd = [*proc.prefix(s.loadgen_cpus, s.nice), str(P.MAIN_PY), "-m", "berth_bench.loadgen",
           urls[d], "--peer", urls[g], "--labels", f"{d},{g}", "--rounds", str(rounds),
           "--body-file", str(body_file), "-c", str(c), "-d", str(s.duration_s),
           "-w", str(s.warmup_s), "--timeout", "120"]  # fmt: skip
    for k, v in t.headers.items():
        cmd += ["--header", f"{k}: {v}"]
    lg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=P.BENCH)  # fmt: skip
    assert lg.stdout is not None
    before: dict[str, dict[int, float]] = {}
    cpu: dict[str, float] = {}
    scrape = ["", ""]  # the gateway's /metrics at the window's start and end
    own: dict[str, Any] = {}
    windows: list[dict[str, Any]] = []
    with httpx.Client(timeout=10) as client:
        for line in lg.stdout:
            line = line.strip()
            if line.startswith("MEASURE_START"):
                before = {name: srv.snapshot() for name, srv in servers.items()}
                scrape[0] = client.get(metrics_url).text
            elif line.startswith("MEASURE_END"):
                cpu = {name: proc.cpu_delta(before[name], srv.snapshot())
                       for name, srv in servers.items()}  # fmt: skip
                scrape[1] = client.get(metrics_url).text
                own = report.hist_delta(scrape[0], scrape[1], OVERHEAD)
            elif line.startswith("{"):
                w = json.loads(line)
                w.update({f"{name}_cpu_s": v for name, v in cpu.items()})
                w["gateway_own_count"] = own["count"]
                w["gateway_own_us_p50"] = own["p50"] * 1e6
                w["gateway_own_us_mean"] = own["mean"] * 1e6
                windows.append(w)
    err = lg.stderr.read() if lg.stderr else ""
    lg.wait()
    if lg.returncode != 0 or len(windows) != 2 * rounds:
        raise RuntimeError(f"load generator failed (exit {lg.returncode}): {err.strip()[-800:]}")
    return windows


def bench_model(
    kind: str, a: argparse.Namespace, s: RuntimeSettings, tmp: Path
) -> list[dict[str, Any]]:
    model = M.prepare(kind)
    served = f"bench-{kind}"
    port = free_port(1)
    work = tmp / kind
    work.mkdir(parents=True, exist_ok=True)
    ln = P.launch(P.SERVERS["berth"], model, name=served, port=port, threads=s.threads,
                  device=s.device, max_batch=s.max_batch, max_delay_ms=s.max_delay_ms,
                  n_cpus=1, workdir=work)  # fmt: skip
    t: Target = next(x for x in targets("berth", kind, served, ln.url_path)
                     if x.variant == ("openai" if kind == "embedding" else "oip-json"))  # fmt: skip
    runtime = proc.Server(ln.cmd, env=ln.env, cwd=ln.cwd, log=work / "runtime.log",
                          cpus=s.server_cpus or None, nice=s.nice)  # fmt: skip
    gateway, gw_base = _start_gateway(served, port, "", s.nice, work)
    urls = {"direct": f"http://127.0.0.1:{port}{t.path}", "gateway": gw_base + t.path}
    rows: list[dict[str, Any]] = []
    try:
        wait_ready(runtime, urls["direct"], t, s.start_timeout_s)
        wait_ready(gateway, urls["gateway"], t, 60)
        runtime.pin()
        for c in s.concurrency:
            gateway.cpus = gateway_cpus(a.gateway_cpus, c, s)
            gateway.pin()
            windows = interleaved(kind, gw_base + "/metrics", urls, t, c, a, s,
                                  {"runtime": runtime, "gateway": gateway}, tmp)  # fmt: skip
            row = {"model": kind, "variant": t.variant, "concurrency": c,
                   "gateway_cpus": gateway.cpus,
                   **report.gateway_pairs(windows), "windows": windows}  # fmt: skip
            rows.append(row)
            lo, hi = row["added_p50_ms_spread"]
            log(f"{kind:9} c={c:<3} p50 direct {row['direct_p50_ms']:.2f} ms, gateway "
                f"{row['gateway_p50_ms']:.2f} ms: added {row['added_p50_ms']:+.2f} ms "
                f"[{lo:+.2f}..{hi:+.2f}] over {row['rounds']} rounds; gateway "
                f"{row['gateway_rps_per_core']:.0f} req/s per core; errors {row['errors']}")  # fmt: skip
    finally:
        gateway.stop()
        runtime.stop()
    return rows


def main(argv: list[str]) -> int:
    a, s = parse(argv)
    date = dt.date.today().isoformat()
    t0 = time.monotonic()
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-gw-") as name:
        for kind in s.models:
            rows += bench_model(kind, a, s, Path(name))
    load_after = os.getloadavg()
    c1 = [r["added_p50_ms"] for r in rows if r["concurrency"] == 1]
    worst_p50 = max(c1) if c1 else None
    per_core = [r["gateway_rps_per_core"] for r in rows if r["concurrency"] > 1]
    best_core = max(per_core) if per_core else None
    summary = {
        # the worst model's median added p50 at c=1
        "added_p50_ms_at_c1": worst_p50,
        "gateway_rps_per_core_best": best_core,
        # first request -> response minus the model's own load, on the dev cluster
        **coldstart.gateway_summary(),
        "goals": GOALS,
        "meets": {
            "added_p50_ms": worst_p50 is not None and worst_p50 <= GOALS["added_p50_ms"],
            "gateway_rps_per_core": best_core is not None
            and best_core >= GOALS["gateway_rps_per_core"],
        },
        "loadgen_bound": any(r["loadgen_bound"] for r in rows),
    }
    doc = {
        "benchmark": "gateway",
        "date": date,
        "mode": "smoke" if a.smoke else "full",
        "setup": {
            "runtime_cpus": s.server_cpus,
            "gateway_cpus": a.gateway_cpus,
            "loadgen_cpus": s.loadgen_cpus,
            "nice": s.nice,
            "cpu_count": os.cpu_count(),
            "windows_s": {
                "warmup_per_path": s.warmup_s,
                "measured": s.duration_s,
                "rounds_scale": {} if a.smoke else ROUNDS_SCALE,
                "rounds_per_path": a.rounds,
                "order": "ABBA",
            },
            # the machine's load average (1, 5, 15 min) before and after: other work on a
            # shared machine moves latencies, which is why rounds are interleaved
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "gateway": "berth-runtime gateway --static (the cluster's proxy code, no discovery)",
        },
        "results": rows,
        "summary": summary,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    s.out.mkdir(parents=True, exist_ok=True)
    path = s.out / f"gateway-{date}{'-smoke' if a.smoke else ''}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(report.format_gateway(rows))
    nan = math.nan
    print(
        f"goals: added p50 <= {GOALS['added_p50_ms']} ms at c=1 -> "
        f"{worst_p50 if worst_p50 is not None else nan:.2f} ms; "
        f">= {GOALS['gateway_rps_per_core']:.0f} req/s per gateway core -> "
        f"{best_core if best_core is not None else nan:.0f}; load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}; results: {path}"
    )
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
