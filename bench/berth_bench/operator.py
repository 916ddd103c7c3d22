"""`berth bench operator`: how fast the operator turns ModelDeployments into serving pods.

1. latency: N ModelDeployments applied one after another; for each, the time from the
   create call returning to the Deployment appearing in a watch (p50/p95).
2. scale: M ModelDeployments (1 GPU each) created at once on K fake 8-GPU nodes; the
   time until every one reports Ready (pods bound by the real scheduler, Running/Ready
   by KWOK, counted by the controller-manager, reported by the operator).
3. the operator's peak RSS (VmHWM) and CPU seconds over the whole run.

KWOK keeps the fake nodes alive: it holds and renews each node's Lease (the dev cluster
starts it with node leases), so the benchmark must not touch them: a Lease held under
another name makes KWOK stop managing that node, and its pods then stay Pending.
`--smoke` runs a few models for a few seconds (run by `make test`). The operator runs as a subprocess of this benchmark; the dev cluster is reused when
it runs, else started and stopped. Results: bench/results/operator-<date>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
H100 = "NVIDIA-H100-80GB-HBM3"
GOALS = {"latency_p50_s": 0.5, "scale_all_ready_s": 120.0, "operator_peak_rss_mb": 200.0}


def _md(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.berth.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"file:///models/{name}.pt", "format": "torchscript"},
            "resources": {"gpu": {"count": 1, "product": H100}, "cpu": "100m", "memory": "256Mi"},
            "scheduling": {"nodeSelector": {"berth.dev/pool": pool}},
            "replicas": 1,
        },
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class ProcStats:
    """Peak RSS and CPU time of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kb = 0
        self.cpu_s = 0.0

    def sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
        ticks = os.sysconf("SC_CLK_TCK")
        self.cpu_s = (int(stat[11]) + int(stat[12])) / ticks


class Watcher(threading.Thread):
    """Watch one resource kind in one namespace; remember when each name first matched."""

    def __init__(self, client: Any, res: Any, namespace: str, match: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.res, self.namespace, self.match = client, res, namespace, match
        self.first: dict[str, float] = {}
        self.cond = threading.Condition()
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                for _, obj in self.client.watch(self.res, namespace=self.namespace):
                    body = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
                    name = body["metadata"]["name"]
                    if name not in self.first and self.match(body):
                        with self.cond:
                            self.first[name] = time.monotonic()
                            self.cond.notify_all()
                    if self.stop:
                        return
            except Exception:  # watch expired or connection reset: start again
                time.sleep(0.2)

    def wait(self, names: set[str] | str, timeout: float) -> bool:
        wanted = {names} if isinstance(names, str) else names
        deadline = time.monotonic() + timeout
        with self.cond:
            while not wanted <= self.first.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True


class PodWatcher(Watcher):
    """Like Watcher, keyed by the pod's model label (one pod per model here)."""

    def run(self) -> None:
        while not self.stop:
            try:
                for _, obj in self.client.watch(self.res, namespace=self.namespace):
                    body = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
                    model = (body["metadata"].get("labels") or {}).get("serving.berth.dev/model")
                    if model and model not in self.first and self.match(body):
                        with self.cond:
                            self.first[model] = time.monotonic()
                            self.cond.notify_all()
                    if self.stop:
                        return
            except Exception:
                time.sleep(0.2)


def _ready(body: dict[str, Any]) -> bool:
    conds = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions_of(conds))


def conditions_of(conds: Any) -> list[dict[str, Any]]:
    return [c if isinstance(c, dict) else c.to_dict() for c in conds]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="berth bench operator", description=__doc__.split("\n")[0])
    p.add_argument("--latency-samples", type=int, default=50)
    p.add_argument("--models", type=int, default=500)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for all Ready")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--keep", action="store_true", help="keep namespaces and nodes afterwards")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a few models on two nodes, to check the benchmark still runs (overrides the sizes)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.latency_samples, args.models, args.nodes, args.timeout = 3, 4, 2, 180.0

    import yaml
    from berth_dev.cluster import DevCluster
    from berth_dev.config import NodePool
    from berth_dev.nodes import pool_manifests
    from lightkube.generic_resource import create_namespaced_resource

    cluster = DevCluster()
    started = not cluster.is_running()
    if started:
        cluster.up()
    client = cluster.client()
    deployment_res = create_namespaced_resource("apps", "v1", "Deployment", "deployments")
    pod_res = create_namespaced_resource("", "v1", "Pod", "pods")
    # `timeout` and `kill` send SIGTERM: clean up (namespaces, nodes, operator) all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    md_res = create_namespaced_resource(
        "serving.berth.dev", "v1alpha1", "ModelDeployment", "modeldeployments"
    )
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/modeldeployments.serving.berth.dev")  # fmt: skip

    run_id = uuid.uuid4().hex[:5]
    pool = f"bench{run_id}"
    print(f"creating {args.nodes} fake nodes (pool {pool}) ...", flush=True)
    nodes = pool_manifests([NodePool(pool, count=args.nodes, gpus=8, product=H100,
                                     cpu="192", memory="2Ti")])  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(nodes))
    ns_lat, ns_scale = f"bench-op-lat-{run_id}", f"bench-op-scale-{run_id}"
    for ns in (ns_lat, ns_scale):
        cluster.kubectl("create", "namespace", ns)

    def create(manifest: dict[str, Any], namespace: str, attempts: int = 6) -> None:
        """Create, retrying when an overloaded API server times out (409: already done)."""
        from lightkube import ApiError

        for attempt in range(attempts):
            try:
                client.create(md_res.from_dict(manifest), namespace=namespace)
                return
            except ApiError as exc:
                if exc.status.code == 409:
                    return
                if exc.status.code not in (429, 500, 503, 504) or attempt == attempts - 1:
                    raise
            except Exception:  # timeouts and resets of the HTTP client
                if attempt == attempts - 1:
                    raise
            time.sleep(0.5 * 2**attempt)

    # The operator's own log stays out of bench/results (it is large and not a result).
    log_path = Path(tempfile.gettempdir()) / f"berth-bench-operator-{run_id}.log"
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    berth = Path(sys.executable).with_name("berth")
    with log_path.open("wb") as log:
        op = subprocess.Popen([str(berth), "operator", "run", "--all-namespaces"],
                              stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip
    stats = ProcStats(op.pid)
    sampling = True

    def sampler() -> None:
        while sampling:
            stats.sample()
            time.sleep(0.5)

    threading.Thread(target=sampler, daemon=True).start()
    result: dict[str, Any] = {}
    try:
        time.sleep(1)
        # Warm-up: one model through the whole path, so startup is not measured.
        dep_watch = Watcher(client, deployment_res, ns_lat, lambda b: True)
        dep_watch.start()
        create(_md("warmup", pool), ns_lat)
        if not dep_watch.wait("warmup", 120):
            raise RuntimeError(f"operator did not create a Deployment; see {log_path}")

        print(f"latency: {args.latency_samples} sequential applies ...", flush=True)
        latencies = []
        for i in range(args.latency_samples):
            name = f"lat-{i:03d}"
            create(_md(name, pool), ns_lat)
            t0 = time.monotonic()
            if not dep_watch.wait(name, 30):
                raise RuntimeError(f"no Deployment for {name} after 30 s")
            latencies.append(max(0.0, dep_watch.first[name] - t0))
        dep_watch.stop = True
        print(f"  p50 {_percentile(latencies, 0.5):.3f} s  p95 {_percentile(latencies, 0.95):.3f} s",
              flush=True)  # fmt: skip

        print(
            f"scale: {args.models} ModelDeployments at once on {args.nodes} nodes ...", flush=True
        )
        ready_watch = Watcher(client, md_res, ns_scale, _ready)
        deps_watch = Watcher(client, deployment_res, ns_scale, lambda b: True)
        bound_watch = PodWatcher(client, pod_res, ns_scale, lambda b: bool(
            (b.get("spec") or {}).get("nodeName")))  # fmt: skip
        running_watch = PodWatcher(client, pod_res, ns_scale, lambda b: (
            (b.get("status") or {}).get("phase") == "Running"))  # fmt: skip
        for w in (ready_watch, deps_watch, bound_watch, running_watch):
            w.start()
        names = {f"m-{i:04d}" for i in range(args.models)}
        cpu0 = stats.cpu_s
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool_exec:
            list(pool_exec.map(lambda n: create(_md(n, pool), ns_scale), sorted(names)))
        created_s = time.monotonic() - t0
        all_deps = deps_watch.wait(names, args.timeout)
        deps_s = max(deps_watch.first.values()) - t0 if all_deps else None
        all_ready = ready_watch.wait(names, args.timeout)
        ready_s = max(ready_watch.first[n] for n in names) - t0 if all_ready else None
        stats.sample()
        scale_cpu = stats.cpu_s - cpu0

        def last(w: Watcher) -> float | None:
            seen = [w.first[n] for n in names if n in w.first]
            return round(max(seen) - t0, 2) if len(seen) == len(names) else None

        bound_s, running_s = last(bound_watch), last(running_watch)
        for w in (ready_watch, deps_watch, bound_watch, running_watch):
            w.stop = True

        result = {
            "benchmark": "operator",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "latency": {
                "samples": len(latencies),
                "p50_s": round(_percentile(latencies, 0.5), 4),
                "p95_s": round(_percentile(latencies, 0.95), 4),
                "max_s": round(max(latencies), 4),
                "what": "ModelDeployment create returned -> Deployment seen by a watch",
            },
            "scale": {
                "models": args.models,
                "nodes": args.nodes,
                "gpus_per_node": 8,
                "create_calls_s": round(created_s, 2),
                "all_deployments_s": None if deps_s is None else round(deps_s, 2),
                "all_pods_bound_s": bound_s,
                "all_pods_running_s": running_s,
                "all_ready_s": None if ready_s is None else round(ready_s, 2),
                "ready": len(ready_watch.first.keys() & names),
                "operator_cpu_s": round(scale_cpu, 1),
            },
            "operator": {
                "peak_rss_mb": round(stats.peak_rss_kb / 1024, 1),
                "cpu_s_total": round(stats.cpu_s, 1),
            },
            "goals": GOALS,
        }
        _report(result, stats, args.out)
    finally:
        sampling = False
        stats.sample()
        op.send_signal(signal.SIGTERM)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.kill()
        if not args.keep:
            # Namespaces first, while the nodes (KWOK) can still finish their pods.
            print("cleaning up ...", flush=True)
            cluster.kubectl("delete", "namespace", ns_lat, ns_scale, "--wait=false", check=False)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = cluster.kubectl("get", "namespace", ns_lat, ns_scale, check=False)
                if left.returncode != 0 and "NotFound" in left.stderr and ns_lat not in left.stdout:
                    break
                time.sleep(2)
            cluster.kubectl("delete", "nodes", "-l", f"berth.dev/pool={pool}", "--wait=false",
                            check=False)  # fmt: skip
        if started and not args.keep:
            cluster.down(quiet=True)

    ready = result.get("scale", {}).get("ready")
    if ready != args.models:
        print(f"only {ready} of {args.models} models turned Ready", file=sys.stderr)
        return 1
    return 0


def _report(result: dict[str, Any], stats: ProcStats, out: Path) -> None:
    result["operator"]["peak_rss_mb"] = round(stats.peak_rss_kb / 1024, 1)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"operator-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    lat, sc, opr = result["latency"], result["scale"], result["operator"]
    print(f"apply->Deployment latency: p50 {lat['p50_s']:.3f} s  p95 {lat['p95_s']:.3f} s "
          f"(goal p50 <= {GOALS['latency_p50_s']} s)")  # fmt: skip
    print(f"{sc['models']} models on {sc['nodes']} nodes: all Deployments "
          f"{sc['all_deployments_s']} s, all Ready {sc['all_ready_s']} s "
          f"(goal <= {GOALS['scale_all_ready_s']:.0f} s)")  # fmt: skip
    print(f"  pods: all bound {sc['all_pods_bound_s']} s, all Running {sc['all_pods_running_s']} s")
    print(f"operator peak RSS {opr['peak_rss_mb']} MB (goal <= "
          f"{GOALS['operator_peak_rss_mb']:.0f} MB), CPU {opr['cpu_s_total']} s")  # fmt: skip
    print(f"wrote {path}")
