"""`berth dev agent`: a small kubelet that runs Berth runtime pods as local processes.

It registers one Node (default `local-0`, see `AgentSettings`), renews its Lease in
kube-node-lease, and for every pod bound to it:

- gives the pod its own loopback address (status.podIP, 127.0.x.y), persisted so a
  restarted agent keeps it; the runtime binds it (BERTH_HOST), so Prometheus sees one
  distinct target per pod (the API server keeps loopback addresses out of
  EndpointSlices, so clients address local pods by pod IP);
- runs each container as a local process per `podrun` (image mapping, env, volumes);
- runs startup, readiness and liveness probes, reports conditions, container states,
  restart counts and exit reasons; a crashing process restarts with the kubelet's
  back-off (immediately, then 10 s doubling up to 5 min);
- on deletion: SIGTERM, the grace period, SIGKILL, then removes the pod object.

Processes and IPs are recorded in `<root>/agent/state.json`; a restarted agent adopts
processes of pods that still exist and stops the others. On SIGTERM the agent stops
every process it runs before exiting, so `berth dev down` leaves nothing behind.
Container output goes to `<root>/agent/pods/<namespace>_<pod>_<uid>/<container>.log`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import podrun, procs
from .config import GPU_PRODUCT_LABEL, GPU_RESOURCE
from .podstatus import ContainerRun, exit_reason, pod_status, rfc3339
from .probes import ProbeSpec, ProbeState, check

log = logging.getLogger("berth.agent")

AGENT_LABEL = "berth.dev/local-agent"
HOST_IP = "127.0.0.1"
DEFAULT_PRODUCT = "NVIDIA-L4"


@dataclass(frozen=True)
class AgentSettings:
    root: Path  # the dev cluster directory; the agent keeps its state under <root>/agent
    kubeconfig: Path
    node_name: str = "local-0"  # the Node this agent registers and serves
    gpus: int | None = None  # nvidia.com/gpu capacity; None: NVML's count, else 2
    product: str | None = None  # nvidia.com/gpu.product; None: NVML's name, else NVIDIA-L4
    cpu: str = "16"  # advertised CPU: local processes share the host, so overcommit
    memory: str = "64Gi"  # advertised memory, overcommitted for the same reason
    max_pods: int = 110  # the kubelet default
    lease_seconds: int = 40  # Lease duration; renewed every lease_seconds / 4
    status_period: float = 20.0  # Node status heartbeat, seconds
    probe_period_cap: float = 1.0  # startup/readiness probes run at least this often, seconds
    backoff_base: float = 10.0  # crash back-off after the first immediate restart, seconds
    backoff_max: float = 300.0  # back-off ceiling, seconds (kubelet: 5 min)
    shutdown_grace: float = 10.0  # most a pod gets to stop when the agent itself stops
    resync: float = 2.0  # full pod list at least this often, seconds (a watch wakes it sooner)
    health_port: int = 0  # GET /healthz on 127.0.0.1 (0: no endpoint)
    pod_ip_prefix: str = "127.0"  # pod IPs are <prefix>.x.y on the loopback interface

    @property
    def dir(self) -> Path:
        return self.root / "agent"

    @property
    def pvc_root(self) -> Path:
        return self.root / "pvc"


def detect_gpus() -> tuple[int, str] | None:
    """(count, product label) of the real GPUs, via nvidia-smi; None without any."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        return None
    product = names[0].replace(" ", "-")
    if not product.upper().startswith("NVIDIA"):
        product = f"NVIDIA-{product}"
    return len(names), product


def node_manifest(s: AgentSettings, gpus: int, product: str) -> dict[str, Any]:
    """The agent's Node: KWOK-like labels, no KWOK annotation (so KWOK leaves it alone).

    It carries one taint, berth.dev/local-agent=true:NoSchedule, and no GPU taint: a pod
    lands here only when it asks to (nodeSelector + toleration, as examples/local do), so a
    benchmark creating hundreds of pods never starts hundreds of real processes, while a
    CPU-only model can still opt in.
    """
    labels = {
        "kubernetes.io/hostname": s.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "berth-dev-local",
        "berth.dev/pool": "local",
        AGENT_LABEL: "true",
    }
    if gpus > 0:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                GPU_PRODUCT_LABEL: product,
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": s.node_name, "labels": labels},
        "spec": {"taints": [{"key": AGENT_LABEL, "value": "true", "effect": "NoSchedule"}]},
    }


def node_status(s: AgentSettings, gpus: int, since: str) -> dict[str, Any]:
    now = rfc3339()
    capacity = {"cpu": s.cpu, "memory": s.memory, "pods": str(s.max_pods)}
    if gpus > 0:
        capacity[GPU_RESOURCE] = str(gpus)

    def cond(ctype: str, status: str, reason: str, msg: str) -> dict[str, Any]:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": msg,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "no pressure"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "no pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "no pressure"),
            cond("Ready", "True", "KubeletReady", "berth dev agent is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": s.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "berth-agent",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "berth-agent://local-process",
            "kernelVersion": os.uname().release,
            "osImage": "local",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
        "phase": "Running",
    }


class IpPool:
    """Pod IPs <prefix>.x.y (x 2..254, y 1..254): one per pod, kept across restarts.

    The prefix is a loopback range: 127.0 for the default dev cluster; a second dev
    cluster on the same machine uses another 127.N; an address whose ports are taken
    is skipped.
    """

    def __init__(self, taken: dict[str, str], prefix: str = "127.0") -> None:
        self.by_uid = dict(taken)
        self.prefix = prefix

    def get(self, uid: str, ports: tuple[int, ...] = ()) -> str:
        if uid in self.by_uid:
            return self.by_uid[uid]
        used = set(self.by_uid.values())
        for x in range(2, 255):
            for y in range(1, 255):
                ip = f"{self.prefix}.{x}.{y}"
                if ip not in used and all(port_free(ip, p) for p in ports):
                    self.by_uid[uid] = ip
                    return ip
        raise RuntimeError("no free loopback pod IP left")

    def release(self, uid: str) -> None:
        self.by_uid.pop(uid, None)


def backoff_delay(restarts: int, base: float, cap: float) -> float:
    """Delay before restart number `restarts + 1`: 0, then base, 2*base, ... up to cap."""
    if restarts <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (restarts - 1)))


@dataclass
class PodRecord:
    namespace: str
    name: str
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)  # pid, ticks, restarts
    gpus: list[int] = field(default_factory=list)


class PodWorker:
    """Runs one pod: its containers, probes and status, until the pod goes away."""

    def __init__(self, agent: Agent, pod: dict[str, Any], adopt: PodRecord | None) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.ip = agent.ips.get(self.uid)
        self.dir = agent.s.dir / "pods" / f"{self.ns}_{self.name}_{self.uid}"
        self.record = adopt or PodRecord(self.ns, self.name)
        self.runs: dict[str, ContainerRun] = {
            c["name"]: ContainerRun(c["name"], c.get("image", ""))
            for c in pod["spec"]["containers"]
        }
        for cname, rec in self.record.containers.items():
            if cname in self.runs:
                self.runs[cname].restart_count = int(rec.get("restarts", 0))
        self.procs: dict[str, procs.Proc] = {}
        self.start_time = time.time()
        self.dirty = asyncio.Event()
        self.deleting = asyncio.Event()
        self.gone = False  # the pod object no longer exists
        self.last_status: dict[str, Any] | None = None
        self.task = asyncio.create_task(self.main(), name=f"pod {self.ns}/{self.name}")

    # -- inputs ----------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def vanish(self) -> None:
        """The pod object was removed without us (force delete): stop right away."""
        self.gone = True
        self.deleting.set()

    def grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        g = meta.get("deletionGracePeriodSeconds")
        if g is None:
            g = spec.get("terminationGracePeriodSeconds", 30)
        return float(g if not self.gone else min(float(g), 2.0))

    # -- the pod's life --------------------------------------------------------------
    async def main(self) -> None:
        publisher = asyncio.create_task(self.publish_loop())
        containers: list[asyncio.Task[None]] = []
        try:
            plans = await self.prepare()
            if plans is not None:
                for spec in self.pod["spec"]["containers"]:
                    containers.append(
                        asyncio.create_task(self.container_loop(spec, plans[spec["name"]]))
                    )
            await self.deleting.wait()
        except asyncio.CancelledError:
            # the agent is shutting down: stop our processes within its grace
            self.agent.shutting_down = True
        finally:
            self.deleting.set()  # container loops return once their process has exited
            grace = self.agent.s.shutdown_grace if self.agent.shutting_down else self.grace()
            await asyncio.gather(*(p.stop(grace) for p in list(self.procs.values())))
            if containers:
                _, pending = await asyncio.wait(containers, timeout=5)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*containers, return_exceptions=True)
            # a process started while we were stopping the others
            await asyncio.gather(*(p.stop(1) for p in list(self.procs.values())))
            for run in self.runs.values():
                if run.state == "running":
                    run.state, run.finished_at = "terminated", time.time()
                    run.exit_code, run.reason = 143, "Error"
                run.ready = False
            self.procs.clear()
            self.agent.forget(self.uid)
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            if not self.agent.shutting_down:
                await self.finish()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.publish(), 2)

    async def finish(self) -> None:
        """After the processes are gone: final status, delete the pod, free its resources."""
        if not self.gone:
            with contextlib.suppress(Exception):
                await self.publish()
        # local resources first, then the object: once it is gone, nothing is left
        self.agent.ips.release(self.uid)
        self.agent.save()
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self.gone:
            await self.agent.delete_pod(self.ns, self.name)

    async def prepare(self) -> dict[str, podrun.ProcessPlan] | None:
        """Pod IP, volumes, process plans; a refusal is reported and retried every 5 s."""
        ports = tuple(
            int(p["containerPort"])
            for c in self.pod["spec"]["containers"]
            for p in c.get("ports") or []
        )
        self.ip = self.agent.ips.get(self.uid, ports)
        self.agent.save()
        self.dirty.set()
        while not self.deleting.is_set():
            try:
                podrun.check_images(self.pod, self.agent.bin_dir)
                cms, secs = podrun.referenced_objects(self.pod)
                configmaps, secrets = await self.agent.fetch_refs(self.ns, cms, secs)
                volumes = podrun.plan_volumes(
                    self.pod, self.dir, self.agent.s.pvc_root, configmaps, secrets
                )
                base_env = self.agent.base_env(self.record)
                plans = {
                    c["name"]: podrun.plan_container(
                        self.pod,
                        c,
                        pod_ip=self.ip,
                        host_ip=HOST_IP,
                        pod_dir=self.dir,
                        bin_dir=self.agent.bin_dir,
                        volumes=volumes,
                        configmaps=configmaps,
                        secrets=secrets,
                        base_env=base_env,
                    )
                    for c in self.pod["spec"]["containers"]
                }
                self.materialize(volumes, plans)
                return plans
            except podrun.Refused as err:
                log.warning("pod %s/%s refused: %s", self.ns, self.name, err.message)
                for run in self.runs.values():
                    run.state, run.reason, run.message = "waiting", err.reason, err.message
                self.dirty.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deleting.wait(), 5)
        return None

    def materialize(
        self, volumes: dict[str, podrun.VolumePlan], plans: dict[str, podrun.ProcessPlan]
    ) -> None:
        for vol in volumes.values():
            vol.path.mkdir(parents=True, exist_ok=True)
            for rel, data in vol.files.items():
                target = vol.path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        fs = self.dir / "fs"
        for plan in plans.values():
            for mount, local in plan.links.items():
                link = fs / mount.lstrip("/")
                local.mkdir(parents=True, exist_ok=True)
                link.parent.mkdir(parents=True, exist_ok=True)
                if link.is_symlink() or link.exists():
                    if link.is_symlink() and link.resolve() == local.resolve():
                        continue
                    if link.is_symlink():
                        link.unlink()
                link.symlink_to(local, target_is_directory=True)
        (self.dir / "home").mkdir(parents=True, exist_ok=True)

    async def container_loop(self, spec: dict[str, Any], plan: podrun.ProcessPlan) -> None:
        name = plan.container
        run = self.runs[name]
        policy = self.pod["spec"].get("restartPolicy", "Always")
        logfile = self.dir / f"{name}.log"
        while not self.deleting.is_set():
            rec = self.record.containers.get(name, {})
            proc: procs.Proc | None = None
            if rec.get("pid") and procs.alive(int(rec["pid"]), rec.get("ticks")):
                proc = procs.Proc(int(rec["pid"]), rec.get("ticks"))
                run.started_at = float(rec.get("startedAt") or time.time())
                log.info("pod %s/%s: adopted %s (pid %d)", self.ns, self.name, name, proc.pid)
            else:
                try:
                    proc = await procs.start(plan.argv, plan.env, plan.cwd, logfile)
                except OSError as err:
                    run.state, run.reason = "waiting", "RunContainerError"
                    run.message = f"cannot start {plan.argv[0]}: {err}"
                    self.dirty.set()
                    await self.sleep(self.agent.s.backoff_base)
                    continue
                run.started_at = time.time()
                log.info("pod %s/%s: started %s (pid %d)", self.ns, self.name, name, proc.pid)
            self.procs[name] = proc
            self.record.containers[name] = {
                "pid": proc.pid,
                "ticks": proc.ticks,
                "restarts": run.restart_count,
                "startedAt": run.started_at,
            }
            self.agent.save()
            run.state, run.reason, run.message, run.pid = "running", "", "", proc.pid
            run.started = "startupProbe" not in spec
            run.ready = False
            self.dirty.set()
            prober = asyncio.create_task(self.probe_loop(spec, plan, run, proc))
            code, sig = await proc.wait()
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)
            await proc.kill()  # leftovers of its process group
            self.procs.pop(name, None)
            run.state, run.finished_at = "terminated", time.time()
            run.ready = run.started = False
            run.exit_code, run.signal = code, sig
            run.reason = run.reason if run.reason and run.message else exit_reason(code, sig)
            if rec.get("pid") == proc.pid and proc.child is None:
                run.message = "exit status unknown: the process was adopted by a restarted agent"
            log.info("pod %s/%s: %s exited %s (%s)", self.ns, self.name, name, code, run.reason)
            self.record.containers[name] = {"restarts": run.restart_count}
            self.agent.save()
            self.dirty.set()
            if self.deleting.is_set():
                return
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                return
            ran_for = (run.finished_at or 0) - (run.started_at or 0)
            restarts = 0 if ran_for > 2 * self.agent.s.backoff_max else run.restart_count
            delay = backoff_delay(restarts, self.agent.s.backoff_base, self.agent.s.backoff_max)
            run.last = run.terminated_dict()
            if delay > 0:
                run.state, run.reason = "waiting", "CrashLoopBackOff"
                run.message = (
                    f"back-off {delay:.0f}s restarting failed container={name} pod={self.name}"
                )
                self.dirty.set()
                await self.sleep(delay)
            run.restart_count += 1
            run.message = ""

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), seconds)

    async def probe_loop(
        self, spec: dict[str, Any], plan: podrun.ProcessPlan, run: ContainerRun, proc: procs.Proc
    ) -> None:
        cap = self.agent.s.probe_period_cap
        ip = self.ip or HOST_IP

        async def kill(why: str) -> None:
            log.info("pod %s/%s: %s; restarting %s", self.ns, self.name, why, run.name)
            run.reason, run.message = "Error", why
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            await proc.stop(grace)

        if "startupProbe" in spec:
            ps = ProbeSpec.from_pod(spec["startupProbe"], cap)
            state = ProbeState(ps)
            await asyncio.sleep(ps.initial_delay)
            while True:
                state.record(*await check(ps.handler, ip, plan.ports, ps.timeout, plan.env))
                if state.ok:
                    break
                if state.failed:
                    await kill(f"Startup probe failed: {state.message}")
                    return
                await asyncio.sleep(ps.period)
            run.started = True
            self.dirty.set()

        async def readiness() -> None:
            if "readinessProbe" not in spec:
                run.ready = True
                self.dirty.set()
                return
            ps = ProbeSpec.from_pod(spec["readinessProbe"], cap)
            state = ProbeState(ps)
            await asyncio.sleep(ps.initial_delay)
            while True:
                if state.record(*await check(ps.handler, ip, plan.ports, ps.timeout, plan.env)):
                    run.ready = state.ok
                    self.dirty.set()
                await asyncio.sleep(ps.period)

        async def liveness() -> None:
            if "livenessProbe" not in spec:
                return
            ps = ProbeSpec.from_pod(spec["livenessProbe"])
            state = ProbeState(ps, ok=True)
            await asyncio.sleep(ps.initial_delay)
            while True:
                state.record(*await check(ps.handler, ip, plan.ports, ps.timeout, plan.env))
                if state.failed:
                    await kill(f"Liveness probe failed: {state.message}")
                    return
                await asyncio.sleep(ps.period)

        await asyncio.gather(readiness(), liveness())

    # -- status ----------------------------------------------------------------------
    async def publish_loop(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(0.05)  # coalesce bursts
            self.dirty.clear()
            try:
                await self.publish()
            except Exception as err:
                log.warning("pod %s/%s: status update failed: %s", self.ns, self.name, err)
                await asyncio.sleep(1)
                self.dirty.set()

    async def publish(self) -> None:
        runs = [self.runs[c["name"]] for c in self.pod["spec"]["containers"]]
        status = pod_status(
            self.pod, runs, pod_ip=self.ip or "", host_ip=HOST_IP, start_time=self.start_time
        )
        if status == self.last_status:
            return
        await self.agent.patch_pod_status(self.ns, self.name, status)
        self.last_status = status


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.s = settings
        self.bin_dir = Path(sys.executable).parent
        self.workers: dict[str, PodWorker] = {}
        self.shutting_down = False
        self.state_path = settings.dir / "state.json"
        saved = self._load()
        self.ips = IpPool(saved.get("ips", {}), settings.pod_ip_prefix)
        self.records: dict[str, PodRecord] = {
            uid: PodRecord(**rec) for uid, rec in saved.get("pods", {}).items()
        }
        found = detect_gpus()
        self.real_gpus = found is not None
        self.gpus = settings.gpus if settings.gpus is not None else (found[0] if found else 2)
        self.product = settings.product or (found[1] if found else DEFAULT_PRODUCT)
        self.client: Any = None
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()

    # -- persistence -----------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        pods = {uid: w.record.__dict__ for uid, w in self.workers.items()}
        pods.update({uid: r.__dict__ for uid, r in self.records.items() if uid not in pods})
        data = {"node": self.s.node_name, "ips": self.ips.by_uid, "pods": pods}
        self.s.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.state_path)

    def forget(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None and not self.shutting_down:
            worker.record.containers = {}
        self.save()

    def base_env(self, record: PodRecord) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, record.gpus)) if self.real_gpus else ""
        return env

    # -- API -------------------------------------------------------------------------
    async def fetch_refs(
        self, ns: str, cms: set[str], secs: set[str]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import ConfigMap, Secret

        configmaps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, str]] = {}
        for name in cms:
            try:
                obj = await self.client.get(ConfigMap, name, namespace=ns)
                configmaps[name] = dict(obj.data or {})
            except ApiError as err:
                if err.status.code != 404:
                    raise
        for name in secs:
            try:
                obj = await self.client.get(Secret, name, namespace=ns)
                secrets[name] = dict(obj.data or {})
            except ApiError as err:
                if err.status.code != 404:
                    raise
        return configmaps, secrets

    async def patch_pod_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            await self.client.patch(Pod.Status, name, {"status": status}, namespace=ns)
        except ApiError as err:
            if err.status.code != 404:
                raise

    async def delete_pod(self, ns: str, name: str) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            await self.client.delete(Pod, name, namespace=ns, grace_period=0)
        except ApiError as err:
            if err.status.code != 404:
                log.warning("deleting pod %s/%s: %s", ns, name, err)

    async def register(self) -> None:
        from lightkube.resources.core_v1 import Node

        manifest = node_manifest(self.s, self.gpus, self.product)
        await self.client.apply(Node.from_dict(manifest), force=True)
        self.node_since = rfc3339()
        await self.post_node_status()
        log.info(
            "node %s registered: %d x %s (%s)",
            self.s.node_name,
            self.gpus,
            self.product,
            "real" if self.real_gpus else "advertised",
        )

    async def post_node_status(self) -> None:
        from lightkube.resources.core_v1 import Node

        status = node_status(self.s, self.gpus, self.node_since)
        await self.client.patch(Node.Status, self.s.node_name, {"status": status})

    async def renew_lease(self) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.coordination_v1 import Lease
        from lightkube.types import PatchType

        t = time.time()
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.s.node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.s.node_name,
                "leaseDurationSeconds": self.s.lease_seconds,
                "renewTime": now,
            },
        }
        try:
            await self.client.patch(
                Lease,
                self.s.node_name,
                body,
                namespace="kube-node-lease",
                patch_type=PatchType.APPLY,
                force=True,
            )
        except ApiError as err:
            log.warning("lease renewal failed: %s", err)

    # -- loops -----------------------------------------------------------------------
    async def heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            await self.renew_lease()
            if time.monotonic() - last_status >= self.s.status_period:
                with contextlib.suppress(Exception):
                    await self.post_node_status()
                last_status = time.monotonic()
            await asyncio.sleep(self.s.lease_seconds / 4)

    async def watch(self) -> None:
        from lightkube import ALL_NS
        from lightkube.resources.core_v1 import Pod

        while True:
            try:
                async for _ in self.client.watch(
                    Pod, namespace=ALL_NS, fields={"spec.nodeName": self.s.node_name}
                ):
                    self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("pod watch ended: %s", err)
            await asyncio.sleep(1)

    async def list_pods(self) -> dict[str, dict[str, Any]]:
        from lightkube import ALL_NS
        from lightkube.resources.core_v1 import Pod

        out = {}
        async for pod in self.client.list(
            Pod, namespace=ALL_NS, fields={"spec.nodeName": self.s.node_name}
        ):
            d = pod.to_dict()
            out[d["metadata"]["uid"]] = d
        return out

    async def sync(self, pods: dict[str, dict[str, Any]]) -> None:
        for uid, pod in pods.items():
            phase = (pod.get("status") or {}).get("phase")
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                continue
            if phase in ("Succeeded", "Failed"):
                if pod["metadata"].get("deletionTimestamp"):
                    await self.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
                continue
            record = self.records.pop(uid, None)
            if record is None:
                record = PodRecord(pod["metadata"]["namespace"], pod["metadata"]["name"])
                record.gpus = self.allocate_gpus(podrun.gpu_request(pod))
            worker = PodWorker(self, pod, record)
            self.workers[uid] = worker
            worker.task.add_done_callback(functools.partial(self._done, uid))
            worker.update(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in pods and not worker.gone:
                worker.vanish()

    def _done(self, uid: str, _task: asyncio.Task[None]) -> None:
        self.workers.pop(uid, None)

    def allocate_gpus(self, count: int) -> list[int]:
        if not self.real_gpus or count <= 0:
            return []
        used = {g for w in self.workers.values() for g in w.record.gpus}
        free = [g for g in range(self.gpus) if g not in used]
        return free[:count]

    async def cleanup_orphans(self, pods: dict[str, dict[str, Any]]) -> None:
        """Stop recorded processes whose pod no longer exists (after an agent restart)."""
        for uid in [u for u in self.records if u not in pods]:
            rec = self.records.pop(uid)
            for c in rec.containers.values():
                if c.get("pid") and procs.alive(int(c["pid"]), c.get("ticks")):
                    log.info("stopping orphan %s/%s pid %s", rec.namespace, rec.name, c["pid"])
                    await procs.Proc(int(c["pid"]), c.get("ticks")).stop(5)
            self.ips.release(uid)
        for d in (self.s.dir / "pods").glob("*_*_*"):
            if d.name.rsplit("_", 1)[-1] not in pods:
                shutil.rmtree(d, ignore_errors=True)
        self.save()

    async def health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP endpoint: 200 and the pods this agent runs, as JSON."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = json.dumps(
                {
                    "node": self.s.node_name,
                    "gpus": self.gpus,
                    "product": self.product,
                    "pods": {
                        f"{w.ns}/{w.name}": {
                            "ip": w.ip,
                            "containers": {n: r.state for n, r in w.runs.items()},
                        }
                        for w in self.workers.values()
                    },
                }
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    async def run(self) -> None:
        from lightkube import AsyncClient, KubeConfig

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.client = AsyncClient(
            KubeConfig.from_file(str(self.s.kubeconfig)), field_manager="berth-agent"
        )
        await self.register()
        await self.renew_lease()
        pods = await self.list_pods()
        await self.cleanup_orphans(pods)
        # adopt what the last agent left
        await self.sync(pods)
        loops = [asyncio.create_task(self.heartbeat()), asyncio.create_task(self.watch())]
        server = None
        if self.s.health_port:
            server = await asyncio.start_server(self.health, HOST_IP, self.s.health_port)
        log.info("agent ready: node %s, state %s", self.s.node_name, self.state_path)
        try:
            while not self.stop.is_set():
                waiter = asyncio.create_task(self.wake.wait())
                stopper = asyncio.create_task(self.stop.wait())
                await asyncio.wait(
                    [waiter, stopper], timeout=self.s.resync, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
                if self.stop.is_set():
                    break
                self.wake.clear()
                try:
                    await self.sync(await self.list_pods())
                except Exception as err:
                    log.warning("pod sync failed: %s", err)
        finally:
            log.info("agent stopping: %d pod(s) to stop", len(self.workers))
            self.shutting_down = True
            for t in loops:
                t.cancel()
            if server is not None:
                server.close()
            workers = list(self.workers.values())
            for w in workers:
                w.task.cancel()
            await asyncio.gather(*(w.task for w in workers), return_exceptions=True)
            # the pods stay (like a stopped kubelet); their process records are cleared
            for w in workers:
                w.record.containers = {}
                self.records[w.uid] = w.record
            self.save()
            with contextlib.suppress(Exception):
                await self.client.close()
            log.info("agent stopped")


def recorded_processes(root: Path) -> list[tuple[int, int | None]]:
    """(pid, ticks) of every process in the agent's state file under `root`."""
    try:
        data = json.loads((root / "agent" / "state.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for rec in data.get("pods", {}).values():
        for c in rec.get("containers", {}).values():
            if c.get("pid"):
                out.append((int(c["pid"]), c.get("ticks")))
    return out


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="berth dev agent", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="dev cluster directory")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--node-name", default="local-0")
    p.add_argument("--gpus", type=int, help="advertised nvidia.com/gpu (default: NVML count or 2)")
    p.add_argument("--product", help=f"nvidia.com/gpu.product (default: NVML or {DEFAULT_PRODUCT})")
    p.add_argument("--health-port", type=int, default=0, help="serve GET /healthz on 127.0.0.1")
    p.add_argument("--pod-ip-prefix", default="127.0", help="pod IPs are PREFIX.x.y")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = AgentSettings(
        root=args.root.resolve(),
        kubeconfig=args.kubeconfig.resolve(),
        node_name=args.node_name,
        gpus=args.gpus,
        product=args.product,
        health_port=args.health_port,
        pod_ip_prefix=args.pod_ip_prefix,
    )
    asyncio.run(Agent(settings).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
