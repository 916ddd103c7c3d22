"""`berth bench autoscale`: how fast the autoscaler reacts, and what 1,000 models cost it.

1. reaction (real runtime pod, real load, the dev cluster's Prometheus and operator): a
   small TorchScript CNN on the dev cluster's real node, idle at one replica, then a load step
   to 4x one replica's capacity (16 closed-loop clients against a concurrency target of 4,
   the batcher holding each request up to 200 ms so every client keeps one in flight).
   Measured: step -> the /scale write (spec.replicas changes), step -> that many replicas
   ready. The policy is the built-in default (stable 60 s, panic 6 s, threshold 2).
2. scale (synthetic series, a real Prometheus, the real operator): M autoscaled models
   (1 GPU each) on fake 8-GPU KWOK nodes; a small exporter started here serves one
   `berth_inflight_requests{namespace, modeldeployment}` series per model, scraped every
   2 s by a second Prometheus started here with a static target (honor_labels). Most
   models sit at their target (no change); 2 % step between 1x and 3x every 30 s so that
   decisions and /scale writes happen. The operator runs as a subprocess with
   `--prometheus-url` of that Prometheus. Measured over a steady window: the autoscaler's
   own tick duration and CPU per tick (its log), Prometheus queries per tick (counted by
   Prometheus itself), the whole operator process' CPU per tick and peak RSS (/proc).

`--smoke` runs part 2 with 20 models for 10 s and skips part 1 (a test runs it).
Results: bench/results/autoscale-<date>.json (smoke: a temporary directory unless --out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.server
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from berth_bench.operator import H100, ProcStats

REPO = Path(__file__).resolve().parents[2]
GOALS = {"write_after_step_s": 4.0, "cpu_per_tick_s": 0.2, "peak_rss_mb": 250.0,
         "queries_per_tick": 2}  # one per metric type in use + the gateway's demand  # fmt: skip
TARGET = 4.0
STATS = re.compile(
    r"autoscaler: (\d+) ticks, (\d+) models, (\d+) queries/tick, tick mean ([\d.]+) s "
    r"max ([\d.]+) s, CPU ([\d.]+) s/tick, (\d+) scale writes, peak RSS (\d+) MiB"
)


# --- synthetic series ----------------------------------------------------------------


class Exporter(threading.Thread):
    """Serves one berth_inflight_requests series per model; 2 % of them move."""

    def __init__(self, namespace: str, names: list[str], period: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.namespace, self.names, self.period = namespace, names, period
        self.movers = set(names[::50])
        self.t0 = time.monotonic()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def render(self) -> str:
        high = int((time.monotonic() - self.t0) / self.period) % 2 == 1
        lines = ["# TYPE berth_inflight_requests gauge"]
        for name in self.names:
            level = 3.0 if high and name in self.movers else 1.0
            value = TARGET * level * random.uniform(0.97, 1.03)  # inside the 0.1 tolerance
            lines.append(
                f'berth_inflight_requests{{namespace="{self.namespace}",'
                f'modeldeployment="{name}",pod="{name}-0"}} {value:.3f}'
            )
        return "\n".join(lines) + "\n"

    def run(self) -> None:
        self.server.serve_forever()


def start_prometheus(exporter_port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from berth_dev.cluster import free_port
    from berth_dev.prometheus import find_binary

    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [{
            "job_name": "synthetic", "scrape_interval": "2s", "scrape_timeout": "2s",
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
        }],
    }  # fmt: skip
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [find_binary(), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the bench Prometheus did not start; see {workdir / 'prometheus.log'}")


def prometheus_queries(url: str) -> float:
    """Instant queries Prometheus has answered so far (its own counter)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _md(name: str, pool: str, policy: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.berth.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"file:///models/{name}.pt", "format": "torchscript"},
            "resources": {"gpu": {"count": 1, "product": H100}, "cpu": "100m", "memory": "256Mi"},
            "scheduling": {"nodeSelector": {"berth.dev/pool": pool}},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "policyRef": {"name": policy},
                            "metric": {"type": "concurrency", "target": TARGET}},
        },
    }  # fmt: skip


def scale_part(
    cluster: Any, models: int, measure_s: float, settle_timeout: float = 600
) -> dict[str, Any]:
    from berth_dev.config import NodePool
    from berth_dev.nodes import pool_manifests
    from lightkube.generic_resource import create_namespaced_resource

    run_id = uuid.uuid4().hex[:5]
    ns, pool, policy = f"bench-as-{run_id}", f"bas{run_id}", f"bench-as-{run_id}"
    names = [f"m-{i:04d}" for i in range(models)]
    workdir = cluster.paths.root / f"bench-autoscale-{run_id}"  # logs, Prometheus data
    workdir.mkdir(parents=True)
    exporter = Exporter(ns, names)
    exporter.start()
    prom, prom_url = start_prometheus(exporter.port, workdir)
    node_count = math.ceil(models * 1.3 / 8) + 1
    nodes = pool_manifests([NodePool(pool, count=node_count, gpus=8, product=H100,
                                     cpu="192", memory="2Ti")])  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes))
    # KWOK holds and renews the fake nodes' Leases (the dev cluster gives it node leases)
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ScalingPolicy",
         "metadata": {"name": policy}, "spec": {"windows": {"stableSeconds": 60, "panicSeconds": 6}}}))  # fmt: skip
    dev_operator = cluster.stop_component("berth-operator")
    log_path = workdir / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
           "BERTH_OPERATOR_AUTOSCALING_STATS_LOG_SECONDS": "5"}  # fmt: skip
    berth = Path(sys.executable).with_name("berth")
    with log_path.open("wb") as log:
        op = subprocess.Popen([str(berth), "operator", "run", "--all-namespaces",
                               "--prometheus-url", prom_url],
                              stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip
    stats = ProcStats(op.pid)
    try:
        print(f"scale: {models} autoscaled models on {node_count} fake nodes ...", flush=True)
        client = cluster.client()
        md_res = create_namespaced_resource("serving.berth.dev", "v1alpha1", "ModelDeployment",
                                            "modeldeployments")  # fmt: skip

        def create(name: str) -> None:
            for attempt in range(6):
                try:
                    client.create(md_res.from_dict(_md(name, pool, policy)), namespace=ns)
                    return
                except Exception as exc:  # overloaded API server: retry; 409: done
                    if "already exists" in str(exc):
                        return
                    time.sleep(0.5 * 2**attempt)
            raise RuntimeError(f"could not create {name}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool_exec:
            list(pool_exec.map(create, names))
        print(f"  created {models} ModelDeployments", flush=True)
        t0 = time.monotonic()
        active = 0
        while time.monotonic() - t0 < settle_timeout:
            out = cluster.kubectl("get", "md", "-n", ns, "-o", "json").stdout
            items = json.loads(out)["items"]
            active = sum(1 for m in items if any(
                c.get("type") == "ScalingActive" and c.get("status") == "True"
                for c in (m.get("status") or {}).get("conditions") or []))  # fmt: skip
            if active == models:
                break
            time.sleep(3)
        settle_s = time.monotonic() - t0
        print(f"  {active}/{models} models ScalingActive after {settle_s:.0f} s; "
              f"measuring {measure_s:.0f} s ...", flush=True)  # fmt: skip
        log_mark = log_path.stat().st_size
        stats.sample()
        cpu0, q0, w0 = stats.cpu_s, prometheus_queries(prom_url), time.monotonic()
        end = w0 + measure_s
        while time.monotonic() < end:
            stats.sample()
            time.sleep(0.5)
        stats.sample()
        window = time.monotonic() - w0
        cpu1, q1 = stats.cpu_s, prometheus_queries(prom_url)
        lines = [m.groups() for m in STATS.finditer(log_path.read_text()[log_mark:])]
        ticks = sum(int(g[0]) for g in lines)
        tick_stats = {
            "log_lines": len(lines),
            "ticks": ticks,
            "tick_mean_s": round(sum(float(g[3]) * int(g[0]) for g in lines) / ticks, 4) if ticks else None,
            "tick_max_s": max((float(g[4]) for g in lines), default=None),
            "cpu_per_tick_s": round(sum(float(g[5]) * int(g[0]) for g in lines) / ticks, 4) if ticks else None,
            "queries_per_tick_operator": int(lines[-1][2]) if lines else None,
            "scale_writes": sum(int(g[6]) for g in lines),
        }  # fmt: skip
        tick_s = 2.0
        return {
            "models": models,
            "models_scaling_active": active,
            "settle_s": round(settle_s, 1),
            "fake_nodes": node_count,
            "measure_window_s": round(window, 1),
            "autoscaler_tick": tick_stats,
            "prometheus_queries_per_tick": round((q1 - q0) / (window / tick_s), 2),
            "operator_process_cpu_per_tick_s": round((cpu1 - cpu0) / (window / tick_s), 4),
            "operator_peak_rss_mb": round(stats.peak_rss_kb / 1024, 1),
            "what": (
                "synthetic berth_inflight_requests series (one per model, 2 % stepping 1x/3x "
                "every 30 s) from an exporter in this process, scraped every 2 s by a real "
                "Prometheus; the real operator (subprocess) against the real control plane "
                "with KWOK pods. autoscaler_tick: the tick alone (queries, decisions, status "
                "hand-off), from the operator's log; operator_process_*: the whole process "
                "(watches, status writes, Kopf) over the window, per 2 s tick."
            ),
        }
    finally:
        op.send_signal(signal.SIGTERM)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.kill()
        prom.terminate()
        exporter.server.shutdown()
        print("cleaning up ...", flush=True)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        try:  # KWOK finishes the pods while the nodes exist; then the nodes go, whatever happens
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if cluster.kubectl("get", "namespace", ns, check=False).returncode != 0:
                    break
                time.sleep(2)
        finally:
            cluster.kubectl("delete", "scalingpolicy", policy, "--wait=false", check=False)
            cluster.kubectl("delete", "nodes", "-l", f"berth.dev/pool={pool}", "--wait=false",
                            check=False)  # fmt: skip
        if dev_operator:
            from berth_dev.addons import Addons

            cluster.start_addons(
                Addons(node=False, prometheus=False, operator=True, examples=False)
            )


# --- the loop in-process ---------------------------------------------------------------


class _Stand:
    """The few reconciler members the autoscaler loop uses, filled with M models (all
    with one ready pod) and no API server: /scale and status writes are counted, not made."""

    def __init__(self, ns: str, names: list[str]) -> None:
        from berth_operator.status import PodObs

        self.autoscaling: dict[Any, Any] = {}
        self.indexes: dict[str, Any] = {"policy_index": {}}
        self.status_writes = 0
        self.scale_writes = 0
        self._pods = [PodObs("p", "Running", ready=True)]
        self._models = {
            (ns, n): {"metadata": {"name": n, "namespace": ns},
                      "spec": {"replicas": 1, **_md(n, "x", "default")["spec"]}}
            for n in names
        }  # fmt: skip
        self.kube = self

    def models(self) -> list[Any]:
        return list(self._models)

    def model(self, key: Any) -> Any:
        return self._models[key]

    def pods(self, key: Any) -> Any:
        return self._pods

    def terminating(self, namespace: str) -> bool:
        return False

    def schedule_status(self, key: Any) -> None:
        self.status_writes += 1

    def event_for(self, *args: Any) -> None:
        pass

    async def scale(self, namespace: str, name: str, replicas: int) -> bool:
        self.scale_writes += 1
        self._models[(namespace, name)]["spec"]["replicas"] = replicas
        return True

    async def patch_policy_status(self, name: str, status: Any) -> bool:
        return True


def inprocess_part(models: int, ticks: int) -> dict[str, Any]:
    """The autoscaler loop of the operator, in this process, against a real Prometheus
    scraping synthetic series: what one tick costs at `models` models."""
    import asyncio
    import resource as res

    from berth_operator.autoscaling.loop import Autoscaler
    from berth_operator.settings import AutoscalingSettings

    ns = "bench-inprocess"
    names = [f"m-{i:04d}" for i in range(models)]
    workdir = Path(tempfile.mkdtemp(prefix="berth-bench-autoscale-inprocess-"))
    exporter = Exporter(ns, names)
    exporter.start()
    prom, url = start_prometheus(exporter.port, workdir)
    try:
        time.sleep(5)  # two scrapes
        rss0 = res.getrusage(res.RUSAGE_SELF).ru_maxrss / 1024
        stand = _Stand(ns, names)
        scaler = Autoscaler(stand, AutoscalingSettings(prometheus_url=url))  # type: ignore[arg-type]

        async def run() -> list[Any]:
            out = []
            q0 = prometheus_queries(url)
            for _ in range(ticks):
                started = time.monotonic()
                out.append(await scaler.tick())
                await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
            out.append(prometheus_queries(url) - q0)
            await scaler.close()
            return out

        *stats, queries = asyncio.run(run())
        rss1 = res.getrusage(res.RUSAGE_SELF).ru_maxrss / 1024
        steady = stats[1:]  # the first tick pays for connections and imports
        cpu = sorted(t.cpu_seconds for t in steady)
        dur = sorted(t.seconds for t in steady)
        return {
            "models": models,
            "ticks": len(stats),
            "tick_seconds_p50": round(dur[len(dur) // 2], 4),
            "tick_seconds_max": round(dur[-1], 4),
            "cpu_per_tick_s_p50": round(cpu[len(cpu) // 2], 4),
            "cpu_per_tick_s_max": round(cpu[-1], 4),
            "queries_per_tick_prometheus": round(queries / len(stats), 2),
            "scale_decisions_written": stand.scale_writes,
            "models_with_data": sum(
                1 for v in stand.autoscaling.values() if v["conditions"][1]["status"] == "True"
            ),
            "bench_process_peak_rss_mb": round(rss1, 1),
            "bench_process_rss_before_loop_mb": round(rss0, 1),
            "what": (
                "the operator's Autoscaler class ticking every 2 s in this process against a "
                "real Prometheus that scrapes synthetic series; the reconciler is replaced by "
                "an in-memory stand-in (models, one ready pod each; /scale and status writes "
                "counted, not sent), so no API server work is included. CPU is process time "
                "of the tick (query, parse, decide, status hand-off). RSS is this whole bench "
                "process (exporter thread included), not the operator's."
            ),
        }
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        exporter.server.shutdown()


# --- reaction -------------------------------------------------------------------------


def reaction_part(cluster: Any) -> dict[str, Any]:
    from berth_dev.addons import Addons
    from berth_dev.examples import claim_manifests
    from berth_dev.weights import write_cnn
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.resources.core_v1 import Pod

    cluster.start_addons(Addons(node=True, prometheus=True, operator=False, examples=False))
    cluster.stop_component("berth-operator")  # restarted below with the Prometheus URL
    cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
    client = cluster.client()
    md_res = create_namespaced_resource("serving.berth.dev", "v1alpha1", "ModelDeployment",
                                        "modeldeployments")  # fmt: skip
    ns = f"bench-react-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    models = cluster.paths.root / "pvc" / ns / "models"
    models.mkdir(parents=True, exist_ok=True)
    write_cnn(models)
    cluster.kubectl("apply", "-f", "-", input=claim_manifests(ns, models, ns))
    md = {
        "apiVersion": "serving.berth.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "cnn"},
        "spec": {
            "model": {"uri": "pvc://models/small-cnn", "format": "torchscript"},
            "runtime": {"batching": {"maxBatchSize": 64, "maxDelayMs": 200}},
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "scheduling": {"nodeSelector": {"berth.dev/local-node": "true"},
                           "tolerations": [{"key": "berth.dev/local-node",
                                            "operator": "Exists", "effect": "NoSchedule"}]},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "policyRef": {"name": "default"},
                            "metric": {"type": "concurrency", "target": TARGET}},
        },
    }  # fmt: skip
    # "default": the built-in defaults unless the cluster has a ScalingPolicy of that name
    has_default = cluster.kubectl("get", "scalingpolicy", "default", check=False).returncode == 0
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(md))

    def pods_ready() -> list[Any]:
        out = []
        for p in client.list(Pod, namespace=ns, labels={"app.kubernetes.io/instance": "cnn"}):
            conds = (p.status.conditions or []) if p.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conds):
                out.append(p)
        return out

    load = None
    try:
        deadline = time.monotonic() + 300
        while not pods_ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the runtime pod did not turn Ready in 300 s")
            time.sleep(0.5)
        time.sleep(8)  # idle samples in the windows
        pod = pods_ready()[0]
        body = Path(tempfile.mkstemp(suffix=".json")[1])
        body.write_text(json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32",
                                                "shape": [1, 3, 32, 32], "data": [0.5] * 3072}]}))  # fmt: skip
        load = subprocess.Popen(
            [sys.executable, "-m", "berth_bench.loadgen",
             f"http://{pod.status.podIP}:8080/v2/models/cnn/infer", "--body-file", str(body),
             "--header", "content-type: application/json", "-c", "16", "-d", "600", "-w", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        step = time.monotonic()
        write_s = ready_s = None
        desired = 1
        while time.monotonic() - step < 240:
            spec = client.get(md_res, "cnn", namespace=ns).to_dict()["spec"]
            desired = int(spec.get("replicas", 1))
            if write_s is None and desired > 1:
                write_s = time.monotonic() - step
            if write_s is not None and len(pods_ready()) >= desired:
                ready_s = time.monotonic() - step
                break
            time.sleep(0.1)
        status = client.get(md_res, "cnn", namespace=ns).to_dict().get("status") or {}
        return {
            "policy": "default (a cluster policy)" if has_default else "built-in defaults",
            "load": "16 closed-loop clients = 4x one replica's target of 4 in-flight requests",
            "step_to_scale_write_s": None if write_s is None else round(write_s, 2),
            "step_to_ready_replicas_s": None if ready_s is None else round(ready_s, 2),
            "replicas_at_ready": desired,
            "autoscaling_status": status.get("autoscaling"),
            "what": "dev cluster: runtime pods on the real node (kubelet + containerd), its Prometheus (2 s scrape), operator tick 2 s",
        }
    finally:
        if load is not None:
            load.terminate()
            load.wait(timeout=10)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", ns, "--wait=false", check=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="berth bench autoscale", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--measure", type=float, default=60.0, help="steady-state seconds measured")
    p.add_argument("--smoke", action="store_true", help="20 models for 10 s, no reaction part")
    p.add_argument("--no-reaction", action="store_true")
    p.add_argument("--no-scale", action="store_true", help="skip the whole-operator part")
    p.add_argument("--loop-models", type=int, default=1000, help="models of the in-process loop")
    p.add_argument("--loop-ticks", type=int, default=30)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.measure, args.no_reaction = 20, 10.0, True
        args.loop_models, args.loop_ticks = 50, 4
    out = args.out or (Path(tempfile.mkdtemp()) if args.smoke else REPO / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)

    from berth_dev.cluster import DevCluster

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = DevCluster()
    started = not cluster.is_running()
    if started:
        cluster.up()
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/modeldeployments.serving.berth.dev",
                        "crd/scalingpolicies.serving.berth.dev")  # fmt: skip
        result: dict[str, Any] = {
            "benchmark": "autoscale",
            "smoke": args.smoke,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "goals": GOALS,
        }
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = out / f"autoscale-{stamp}{'-smoke' if args.smoke else ''}.json"
        result["reaction"] = "skipped" if args.no_reaction else reaction_part(cluster)
        path.write_text(json.dumps(result, indent=2) + "\n")  # a partial result first
        print(json.dumps(result["reaction"], indent=2), flush=True)
        result["loop_in_process"] = inprocess_part(args.loop_models, args.loop_ticks)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["loop_in_process"], indent=2), flush=True)
        result["scale"] = (
            "skipped" if args.no_scale else scale_part(cluster, args.models, args.measure)
        )
    finally:
        if started:
            cluster.down(quiet=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0
