"""Start, stop and inspect the local control plane.

Components run as local processes in their own sessions, so they outlive the
`berth dev up` command; their pids, ports and URLs sit in `<root>/state.json`.
The API server listens on the host end of the real node's link (a 198.18.0.0/15
address on this machine only, see netplan.py), so the node and its pods reach it;
every other listener is on 127.0.0.1. `down` stops them in reverse order and waits.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import netplan
from . import node as realnode
from .config import Addons, DevConfig
from .pki import Pki, ensure_pki
from .processes import group_alive, pid_alive, spawn, terminate_group
from .state import (
    HACK_DIR,
    DevClusterError,
    Paths,
    free_port,
    http_ok,
    read_state,
    running_components,
    write_state,
)

__all__ = [
    "DevCluster",
    "DevClusterError",
    "Paths",
    "build_binaries",
    "free_port",
    "group_alive",
    "http_ok",
    "pid_alive",
    "reachable_external_cluster",
    "read_state",
    "running_components",
    "terminate_group",
    "write_state",
]

BUILD_SCRIPT = HACK_DIR / "build-k8s.sh"
CONTEXT = "berth-dev"

Progress = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_binaries(progress: Progress = _stderr) -> Path:
    """Run hack/build-k8s.sh (a no-op with a warm cache); return the bin directory."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if proc.returncode != 0:
        raise DevClusterError(
            "building the control plane failed (see the step above); "
            "retry with `bash hack/build-k8s.sh`"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_crt)},
            }
        ],
        "users": [
            {
                "name": "berth-admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_crt),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "berth-admin"}}],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def _ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
    ctx.load_cert_chain(str(pki.admin_crt), str(pki.admin_key))
    return ctx


class DevCluster:
    """The local control plane in `config.root`."""

    def __init__(self, config: DevConfig | None = None, progress: Progress = _stderr) -> None:
        self.config = config or DevConfig()
        self.paths = Paths(self.config.root)
        self.progress = progress
        self._t0 = time.monotonic()

    # -- reporting -------------------------------------------------------------------
    def _step(self, msg: str) -> None:
        self.progress(f"[berth dev +{time.monotonic() - self._t0:5.1f}s] {msg}")

    # -- queries ---------------------------------------------------------------------
    def is_running(self) -> bool:
        return "kube-apiserver" in running_components(self.paths)

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.paths)

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return Path(self.state["binDir"])

    @property
    def server(self) -> str:
        return str(self.state["server"])

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.paths.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise DevClusterError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    # -- lifecycle -------------------------------------------------------------------
    def _spawn(
        self,
        name: str,
        argv: list[str],
        state: dict[str, Any],
        env: dict[str, str] | None = None,
        marker: str | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = spawn(argv, self.paths.log(name), self.paths.root, env)
        state.setdefault("components", {})[name] = {
            "pid": proc.pid,
            "marker": marker or (argv[0] if len(argv) < 2 else f"{argv[0]} {argv[1]}"),
            "log": str(self.paths.log(name)),
            "startedAt": time.time(),  # state.json sorts keys: down() orders by this
        }
        write_state(self.paths, state)
        return proc

    def _wait(
        self,
        what: str,
        check: Callable[[], bool],
        proc: subprocess.Popen[bytes] | None,
        log: str,
        timeout: float = 90,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if proc is not None and proc.poll() is not None:
                raise DevClusterError(
                    f"{what}: the process exited with code {proc.returncode}; read {log}"
                )
            time.sleep(0.2)
        raise DevClusterError(f"{what}: not ready after {timeout:.0f}s; read {log}")

    def up(self, bin_dir: Path | None = None, addons: Addons | None = None) -> None:
        """Start every component and the fake nodes; return once the API is ready.

        `addons` (real node, Prometheus, operator, examples) start after the control
        plane; None starts the control plane only.
        """
        if self.is_running():
            raise DevClusterError(
                f"a dev cluster is already running (state {self.paths.state}); "
                "`berth dev down` stops it"
            )
        self.down(quiet=True)  # clear leftovers of a crashed run
        self._t0 = time.monotonic()
        root = self.paths.root
        root.mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(exist_ok=True)
        if bin_dir is None:
            self._step("control plane binaries (a cold build compiles Kubernetes: 10-30 min)")
            bin_dir = build_binaries(self.progress)
        k8s = str(bin_dir / "berth-k8s")
        net = realnode.plan(root, read_state(self.paths))
        pki = ensure_pki(self.paths.pki, net.kubernetes_service_ip, (net.host_ip,))
        self._reset_etcd_if_range_changed(net)
        state: dict[str, Any] = {
            "binDir": str(bin_dir),
            "kubeconfig": str(self.paths.kubeconfig),
            "startedAt": time.time(),
            "node": {
                "index": net.index,
                "veth": net.veth_host,
                "cgroupRoot": net.cgroup_root,
                "serviceCIDR": net.service_cidr,
                "podCIDR": net.pod_cidr,
                "hostIP": net.host_ip,
                "nodeIP": net.node_ip,
            },
        }
        write_state(self.paths, state)
        self._step(f"node sandbox: link {net.host_ip} <-> {net.node_ip}, pods {net.pod_cidr}")
        holder = realnode.start_sandbox(self, state, net)
        state["node"]["mntns"] = os.readlink(f"/proc/{holder}/ns/mnt")
        ports = {
            # on this cluster's own address: the same port every start (the `kubernetes`
            # Service's endpoints in etcd keep the port of the first start)
            "apiserver": free_port(self.config.apiserver_port, net.host_ip),
            "etcd": free_port(),
            "etcdPeer": free_port(),
            "controllerManager": free_port(),
            "scheduler": free_port(),
            "kwok": free_port(),
        }
        server = f"https://{net.host_ip}:{ports['apiserver']}"
        state["server"] = server
        state["ports"] = ports
        write_state(self.paths, state)
        write_kubeconfig(self.paths.kubeconfig, server, pki)
        kc = str(self.paths.kubeconfig)

        self._step(f"etcd on 127.0.0.1:{ports['etcd']}")
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        etcd = self._spawn(
            "etcd",
            [
                k8s,
                "etcd",
                f"--data-dir={self.paths.etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcdPeer']}",
                "--unsafe-no-fsync=true",
            ],
            state,
        )
        self._wait("etcd", lambda: http_ok(f"{etcd_url}/health"), etcd, str(self.paths.log("etcd")))

        self._step(f"kube-apiserver on {server}")
        api = self._spawn(
            "kube-apiserver",
            [
                k8s,
                "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                # the host end of the node link: reachable from the host, the node and pods
                f"--bind-address={net.host_ip}",
                f"--advertise-address={net.host_ip}",
                f"--secure-port={ports['apiserver']}",
                f"--cert-dir={root / 'apiserver-certs'}",
                f"--tls-cert-file={pki.server_crt}",
                f"--tls-private-key-file={pki.server_key}",
                f"--client-ca-file={pki.ca_crt}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={net.service_cidr}",
                # the node's address, never its name: no DNS lookup leaves the machine
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.admin_crt}",
                f"--kubelet-client-key={pki.admin_key}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--v=1",
            ],
            state,
        )
        ctx = _ssl_context(pki)
        self._wait(
            "kube-apiserver",
            lambda: http_ok(f"{server}/readyz", ctx),
            api,
            str(self.paths.log("kube-apiserver")),
            timeout=120,
        )

        self._step("kube-controller-manager, kube-scheduler, kwok")
        common = [f"--kubeconfig={kc}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        delegated = [f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                k8s,
                "kube-controller-manager",
                *common,
                *delegated,
                f"--secure-port={ports['controllerManager']}",
                f"--root-ca-file={pki.ca_crt}",
                f"--service-account-private-key-file={pki.sa_key}",
                "--use-service-account-credentials=false",
                "--kube-api-qps=300",
                "--kube-api-burst=600",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--concurrent-gc-syncs=40",
                # A 2-core machine under load may be late with heartbeats; don't evict for it.
                "--node-monitor-grace-period=120s",
                "--profiling=false",
            ],
            state,
        )
        sched = self._spawn(
            "kube-scheduler",
            [
                k8s,
                "kube-scheduler",
                *common,
                *delegated,
                f"--secure-port={ports['scheduler']}",
                "--profiling=false",
            ],
            state,
        )
        kwok = self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={kc}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                # fake pods' addresses: the upper half of this cluster's block (never used)
                f"--cidr={net.fake_pod_cidr}",
                # Leases like a kubelet, so a loaded machine does not turn fake nodes NotReady.
                "--node-lease-duration-seconds=40",
                f"--node-ip={net.fake_node_ip}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            state,
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, proc, port in (
            ("kube-controller-manager", kcm, ports["controllerManager"]),
            ("kube-scheduler", sched, ports["scheduler"]),
        ):
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait(
                name, functools.partial(http_ok, url, insecure), proc, str(self.paths.log(name))
            )
        self._wait(
            "kwok",
            lambda: http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"),
            kwok,
            str(self.paths.log("kwok")),
        )

        self._step(f"fake nodes: {', '.join(f'{p.count}x {p.name}' for p in self.config.pools)}")
        from .nodes import create_fake_nodes

        client = self.client()
        names = create_fake_nodes(client, self.config.pools)
        state["fakeNodes"] = names
        write_state(self.paths, state)
        self._wait_nodes_ready(client, names)
        self._step("control plane ready")
        if addons is not None:
            self.start_addons(addons)

    def _reset_etcd_if_range_changed(self, net: netplan.NodeNet) -> None:
        """A new Service range cannot take over an etcd that holds the old one: start afresh."""
        marker = self.paths.root / "service-cidr"
        if self.paths.etcd_data.exists() and (
            not marker.exists() or marker.read_text().strip() != net.service_cidr
        ):
            self._step(f"the Service range is now {net.service_cidr}: starting with an empty etcd")
            shutil.rmtree(self.paths.etcd_data)
        marker.write_text(net.service_cidr)

    def stop_component(self, name: str, grace: float = 15) -> bool:
        """Stop one recorded component (for example `berth-operator`); whether it ran."""
        if name == "berth-operator":
            from .addons import stop_operator_in_cluster

            if stop_operator_in_cluster(self):
                return True
        state = read_state(self.paths)
        info = state.get("components", {}).pop(name, None)
        if info is None:
            return False
        write_state(self.paths, state)
        pid = int(info["pid"])
        if not pid_alive(pid, info.get("marker")):
            return False
        terminate_group(pid, grace)
        return True

    def start_addons(self, addons: Addons) -> None:
        """Start the selected addons on a running control plane (running ones are kept)."""
        from .addons import start

        start(self, addons)

    def _wait_nodes_ready(self, client: Any, names: list[str], timeout: float = 60) -> None:
        from lightkube.resources.core_v1 import Node

        want = set(names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = {
                n.metadata.name
                for n in client.list(Node, labels={"type": "kwok"})
                if n.metadata
                and n.status
                and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            }
            if want <= ready:
                return
            time.sleep(0.3)
        raise DevClusterError(
            f"fake nodes not Ready after {timeout:.0f}s: {sorted(want - ready)}; "
            f"read {self.paths.log('kwok')}"
        )

    def client(self) -> Any:
        """A lightkube sync Client for this cluster."""
        from lightkube import Client, KubeConfig

        return Client(KubeConfig.from_file(str(self.paths.kubeconfig)), field_manager="berth-dev")

    def down(self, quiet: bool = False, grace: float = 15) -> list[str]:
        """Stop every recorded component (reverse start order); return their names."""
        state = read_state(self.paths)
        comps: dict[str, Any] = state.get("components", {})
        stopped = realnode.stop(self, state, quiet, grace)
        if state:
            write_state(self.paths, state)
        for name in sorted(comps, key=lambda n: comps[n].get("startedAt", 0), reverse=True):
            info = comps[name]
            pid = int(info["pid"])
            if not pid_alive(pid, info.get("marker")):
                continue
            if not quiet:
                self._step(f"stopping {name} (pid {pid})")
            terminate_group(pid, grace)
            stopped.append(name)
        if comps:
            state["components"] = {}
            write_state(self.paths, state)
        return stopped

    def status(self) -> dict[str, Any]:
        state = read_state(self.paths)
        comps = state.get("components", {})
        out: dict[str, Any] = {"root": str(self.paths.root), "components": {}}
        ports = state.get("ports", {})
        urls = {
            "kube-apiserver": state.get("server"),
            "etcd": f"http://127.0.0.1:{ports.get('etcd')}",
            "kube-controller-manager": f"https://127.0.0.1:{ports.get('controllerManager')}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{ports.get('scheduler')}/healthz",
            "kwok": f"http://127.0.0.1:{ports.get('kwok')}/healthz",
        }
        urls.update(state.get("urls", {}))
        for name, info in comps.items():
            alive = pid_alive(int(info["pid"]), info.get("marker"))
            out["components"][name] = {
                "state": "running" if alive else "stopped",
                "pid": info["pid"],
                "url": urls.get(name),
                "log": info.get("log"),
            }
        if state.get("operatorRelease"):  # the operator installed with the chart
            info = state["operatorRelease"]
            proc = self.kubectl("-n", info["namespace"], "get", f"deployment/{info['release']}-operator",
                                "-o", "jsonpath={.status.availableReplicas}", check=False)  # fmt: skip
            ready = proc.returncode == 0 and proc.stdout.strip() not in ("", "0")
            out["components"]["berth-operator"] = {
                "state": "running" if ready else "stopped",
                "pid": None,
                "url": f"in-cluster: deployment {info['namespace']}/{info['release']}-operator",
                "log": f"kubectl -n {info['namespace']} logs deployment/{info['release']}-operator",
            }
        out["running"] = bool(comps) and all(
            c["state"] == "running" for c in out["components"].values()
        )
        if out["running"]:
            out["kubeconfig"] = str(self.paths.kubeconfig)
            out["server"] = state.get("server")
        return out


def reachable_external_cluster(kubectl: Path, own_kubeconfig: Path) -> str | None:
    """The server of $KUBECONFIG when it names a reachable cluster other than ours."""
    env = os.environ.get("KUBECONFIG")
    if not env:
        return None
    if any(Path(p).resolve() == own_kubeconfig.resolve() for p in env.split(":") if p):
        return None
    proc = subprocess.run(
        [str(kubectl), "version", "-o", "json", "--request-timeout=3s"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if proc.returncode != 0:
        return None
    server = subprocess.run(
        [
            str(kubectl),
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return server or env
