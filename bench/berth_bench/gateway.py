"""`berth bench gateway`: the cost of the gateway hop, same machine, same run.

For each model (trivial identity, MiniLM embeddings) one `berth-runtime serve` process,
and one `berth-runtime gateway --static <model>=<runtime address>` in front of it (the
same proxy code as in the cluster; static routes instead of Kubernetes discovery). At
each concurrency (1 and 32) the one closed-loop load generator drives the runtime
directly, then through the gateway: added p50 latency (goal <= 1 ms) and gateway
requests per second per CPU core, from the gateway process' own CPU time over the
measured window (goal >= 2,500, Knative's activator is documented at roughly 2,500 rps
per vCPU).

Cold start (goal <= 1 s of overhead: first request to its response minus the model's
own load time) needs Kubernetes: `berth bench coldstart` (coldstart.py) measures it on
the running dev cluster, phase by phase; this benchmark's summary runs it once when the
dev cluster runs, else reports the newest bench/results/coldstart-*.json.

    berth bench gateway --smoke     # trivial model, c=1 and 32, 2 s windows (~1 min)
    berth bench gateway             # trivial + embedding, 10 s windows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from berth_bench import coldstart, proc
from berth_bench import models as M
from berth_bench import peers as P
from berth_bench.runtime import Settings as RuntimeSettings
from berth_bench.runtime import Target, free_port, log, run_loadgen, targets, wait_ready

RESULTS = P.BENCH / "results"
GOALS = {"added_p50_ms": 1.0, "gateway_rps_per_core": 2500.0, "cold_start_overhead_s": 1.0}


def parse(argv: list[str]) -> tuple[argparse.Namespace, RuntimeSettings]:
    ap = argparse.ArgumentParser(prog="berth bench gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="trivial model only, 2 s windows")
    ap.add_argument("--models", default="", help="comma-separated: trivial,embedding")
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--server-cpus", default="1", help="taskset list for the runtime")
    ap.add_argument("--gateway-cpus", default="1", help="taskset list for the gateway")
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    models = tuple(m for m in a.models.split(",") if m) or (
        ("trivial",) if a.smoke else ("trivial", "embedding")
    )
    s = RuntimeSettings(
        quick=a.smoke,
        models=models,
        servers=("berth",),
        concurrency=tuple(int(c) for c in a.concurrency.split(",")),
        warmup_s=1.0 if a.smoke else a.warmup,
        duration_s=2.0 if a.smoke else a.duration,
        server_cpus=a.server_cpus,
        loadgen_cpus=a.loadgen_cpus,
        out=a.out,
    )
    return a, s


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
    gateway, gw_base = _start_gateway(served, port, a.gateway_cpus, s.nice, work)
    direct_base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        wait_ready(runtime, direct_base + t.path, t, s.start_timeout_s)
        wait_ready(gateway, gw_base + t.path, t, 60)
        runtime.pin()
        gateway.pin()
        for c in s.concurrency:
            direct = run_loadgen(direct_base + t.path, t, c, s, runtime, tmp)
            via = run_loadgen(gw_base + t.path, t, c, s, gateway, tmp)
            ok = via["requests"] - via["errors"]
            row = {
                "model": kind,
                "variant": t.variant,
                "concurrency": c,
                "direct": direct,
                "gateway": via,
                "added_p50_ms": via["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": via["p99_ms"] - direct["p99_ms"],
                "rps_ratio": via["rps"] / direct["rps"] if direct["rps"] else float("nan"),
                "gateway_cpu_s": via["server_cpu_s"],
                # answered requests per CPU-second of the gateway process, measured window
                "gateway_rps_per_core": ok / via["server_cpu_s"]
                if via["server_cpu_s"] > 0 else float("nan"),
                "errors": direct["errors"] + via["errors"],
            }  # fmt: skip
            rows.append(row)
            log(f"{kind:9} c={c:<3} direct p50 {direct['p50_ms']:.2f} ms {direct['rps']:8.0f}/s | "
                f"gateway p50 {via['p50_ms']:.2f} ms {via['rps']:8.0f}/s | added p50 "
                f"{row['added_p50_ms']:+.2f} ms, gateway {row['gateway_rps_per_core']:.0f} "
                f"req/s per core, errors {row['errors']}")  # fmt: skip
    finally:
        gateway.stop()
        runtime.stop()
    return rows


def main(argv: list[str]) -> int:
    a, s = parse(argv)
    date = dt.date.today().isoformat()
    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="berth-bench-gw-") as name:
        for kind in s.models:
            rows += bench_model(kind, a, s, Path(name))
    worst_p50 = max((r["added_p50_ms"] for r in rows if r["concurrency"] == 1), default=None)
    per_core = [r["gateway_rps_per_core"] for r in rows if r["concurrency"] > 1]
    summary = {
        "added_p50_ms_at_c1": worst_p50,
        "gateway_rps_per_core_best": max(per_core) if per_core else None,
        # first request -> response minus the model's own load, on the dev cluster
        **coldstart.gateway_summary(),
        "goals": GOALS,
        "meets": {
            "added_p50_ms": worst_p50 is not None and worst_p50 <= GOALS["added_p50_ms"],
            "gateway_rps_per_core": bool(per_core)
            and max(per_core) >= GOALS["gateway_rps_per_core"],
        },
    }
    doc = {
        "benchmark": "gateway",
        "date": date,
        "mode": "smoke" if a.smoke else "full",
        "setup": {
            "runtime_cpus": s.server_cpus,
            "gateway_cpus": a.gateway_cpus,
            "loadgen_cpus": s.loadgen_cpus,
            "cpu_count": os.cpu_count(),
            "windows_s": {"warmup": s.warmup_s, "measured": s.duration_s},
            "gateway": "berth-runtime gateway --static (the cluster's proxy code, no discovery)",
        },
        "results": rows,
        "summary": summary,
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    s.out.mkdir(parents=True, exist_ok=True)
    path = s.out / f"gateway-{date}{'-smoke' if a.smoke else ''}.json"
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"{'model':10} {'c':>3} {'direct p50':>11} {'gw p50':>8} {'added':>7} "
          f"{'direct rps':>10} {'gw rps':>8} {'gw rps/core':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['model']:10} {r['concurrency']:>3} {r['direct']['p50_ms']:>9.2f}ms "
              f"{r['gateway']['p50_ms']:>6.2f}ms {r['added_p50_ms']:>+6.2f} "
              f"{r['direct']['rps']:>10.0f} {r['gateway']['rps']:>8.0f} "
              f"{r['gateway_rps_per_core']:>11.0f}")  # fmt: skip
    print(
        f"goals: added p50 <= {GOALS['added_p50_ms']} ms at c=1 -> {worst_p50:.2f} ms; "
        f">= {GOALS['gateway_rps_per_core']:.0f} req/s per gateway core -> "
        f"{summary['gateway_rps_per_core_best'] or float('nan'):.0f}; results: {path}"
    )
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
