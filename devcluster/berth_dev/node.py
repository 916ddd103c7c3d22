"""The dev cluster's real node: containerd + runc + CNI + kubelet + kube-proxy.

The node lives in a sandbox of its own: one holder process (`unshare --mount --net`)
owns a mount namespace and a network namespace, and containerd, the kubelet and
kube-proxy are started inside both (`nsenter`). So

- every mount the node makes (container root filesystems, pod volumes, the bind mounts
  that keep pod network namespaces) exists only in that mount namespace, and the kernel
  drops them all when the node's last process exits;
- kube-proxy's iptables rules, the CNI bridge and the pods' veths live in the node's
  network namespace, so two dev clusters on one machine (a test's private cluster beside
  the shared one) never see each other's rules, and `down` removes them with the
  namespace;
- the host reaches the node over one veth pair and routes the pod and Service ranges
  (198.18.0.0/15, see netplan.py) through it: ClusterIP Services work from the host.

Local adaptations (each exists because of this VM or of a machine without a registry;
none of them is in anything a real cluster would use):

- `failCgroupV1: false` and `cgroupDriver: cgroupfs`: cgroups here are v1 (with a v2
  `unified` mount) and there is no systemd; the kubelet's cgroups go under a per-cluster
  `cgroupRoot` (/berth-<tag>) so two dev clusters never share `kubepods`.
- containerd's `restrict_oom_score_adj`: this VM refuses to lower `oom_score_adj` below
  0, and the kubelet asks -998 for pod sandboxes; without it runc fails every sandbox
  with "can't get final child's PID from pipe: EOF".
- The pause image is built locally (busybox-static, see images.py) and is containerd's
  sandbox image; the Berth runtime image is built locally and imported. Nothing is
  pulled (`imagePullPolicy: IfNotPresent`).
- The kubelet's host kernel tunables (vm.overcommit_memory, kernel.panic,
  kernel.panic_on_oops) are shown to it with its values inside the node's mount
  namespace instead of being set on the shared host; /var/log/containers and
  /run/containerd (fixed paths) are directories of the node there.
- The kubelet's image garbage collection and disk-pressure eviction are off: the
  locally imported images cannot be pulled again.
- The node advertises `nvidia.com/gpu` (a status patch, as for any extended resource)
  so that examples asking for one GPU schedule here; without a real GPU the runtime
  runs on CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import netplan
from .netplan import NodeNet
from .pki import Pki, ensure_client_cert

if TYPE_CHECKING:
    from .cluster import DevCluster

NODE_NAME = "local-node-0"
NODE_LABEL = "berth.dev/local-node"  # label and taint: model pods opt in with both
FAKE_GPUS = 2
FAKE_GPU_PRODUCT = "NVIDIA-L4"
CNI_BIN = "/usr/lib/cni"
SANDBOX_IMAGE = "localhost/berth/pause:1"
PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "util-linux")
COMPONENTS = ("kubelet", "kube-proxy", "containerd", "node-sandbox")  # stop order
CGROUP_FS = Path("/sys/fs/cgroup")


class NodeError(RuntimeError):
    """A step of the real node failed; the message names the step and the log."""


def node_dir(root: Path) -> Path:
    return root / "node"


def _run(argv: list[str], what: str, input: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise NodeError(f"{what}: `{' '.join(argv)}` failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def check_host() -> None:
    """The host programs the node needs (`make node-deps` installs them)."""
    missing = [
        p
        for p in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare", "nsenter")
        if shutil.which(p) is None
    ]
    missing += [p for p in ("bridge", "host-local", "loopback") if not Path(CNI_BIN, p).exists()]
    if shutil.which("iptables") is None:
        missing.append("iptables")
    if missing:
        raise NodeError(
            f"missing on this machine: {', '.join(missing)}; run `make node-deps` "
            f"(apt-get install {' '.join(PACKAGES)})"
        )


# -- addresses ---------------------------------------------------------------------------
def taken_indices() -> set[int]:
    """Address blocks other dev clusters route on this host."""
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    taken = set()
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else ""
        index = netplan.index_of(dst.split("/")[0]) if dst[:1].isdigit() else None
        if index is not None:
            taken.add(index)
    return taken


def plan(root: Path, state: dict[str, Any]) -> NodeNet:
    """This cluster's addresses: the recorded block when it is still free, else a free one."""
    recorded = state.get("node", {}).get("index")
    taken = taken_indices()
    if isinstance(recorded, int) and recorded not in taken:
        return NodeNet(recorded, netplan.cluster_tag(root))
    return netplan.choose(root, taken)


# -- pure builders -----------------------------------------------------------------------
def containerd_config(ndir: Path, runc_root: Path) -> str:
    """containerd's own config: every path under the node directory, not the system's."""
    return f"""version = 2
root = "{ndir / "containerd" / "root"}"
state = "{ndir / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{ndir / "containerd.sock"}"

[ttrpc]
  address = "{ndir / "containerd.sock.ttrpc"}"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{ndir / "containerd" / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # this VM refuses negative oom_score_adj (see the module docstring)
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{ndir / "cni" / "net.d"}"
    max_conf_num = 1
"""


def cni_config(net: NodeNet, ipam_dir: Path) -> dict[str, Any]:
    """A bridge with host-local addresses from the cluster's pod range."""
    return {
        "cniVersion": "0.4.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": net.pod_cidr, "gateway": net.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(net: NodeNet, ndir: Path, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 with a v2 `unified` mount and no systemd (module docstring)
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": net.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{ndir / 'containerd.sock'}",
        "address": net.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "resolvConf": "",
        "podLogsDir": str(ndir / "pod-logs"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "serializeImagePulls": False,
        "maxPods": 50,
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "0s",
        "shutdownGracePeriod": "0s",
        "registerWithTaints": [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}],
    }


def kube_proxy_config(net: NodeNet, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": net.pod_cidr,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # inside a network namespace the conntrack sysctls are not ours to change
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
    }


def kubeconfig_doc(server: str, ca: Path, crt: Path, key: Path, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "berth-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "berth-dev", "context": {"cluster": "berth-dev", "user": user}}],
        "current-context": "berth-dev",
    }


# -- the sandbox (network + mount namespaces) --------------------------------------------
def _ns(pid: int) -> list[str]:
    return [f"--mount=/proc/{pid}/ns/mnt", f"--net=/proc/{pid}/ns/net"]


def in_node(pid: int, argv: list[str]) -> list[str]:
    """`argv` run inside the node's namespaces (nsenter execs it: same pid)."""
    return ["nsenter", *_ns(pid), "--", *argv]


def start_sandbox(dev: DevCluster, state: dict[str, Any], net: NodeNet) -> int:
    """The holder of the node's namespaces, and the veth link; return the holder's pid."""
    holder = dev._spawn(
        "node-sandbox",
        ["unshare", "--mount", "--propagation", "slave", "--net", "--", "sleep", "infinity"],
        state,
        marker="sleep infinity",
    )
    own = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{holder.pid}/ns/net") != own and "sleep" in Path(
                f"/proc/{holder.pid}/cmdline"
            ).read_text(errors="replace"):
                break
        except OSError:
            pass
        time.sleep(0.02)
    else:
        raise NodeError(
            f"node sandbox: no namespace after 10s; read {dev.paths.log('node-sandbox')}"
        )
    pid = holder.pid
    v = net.veth_host
    subprocess.run(["ip", "link", "del", v], capture_output=True, check=False)  # a leftover
    _run(
        ["ip", "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", str(pid)], "veth"
    )
    _run(["ip", "addr", "add", f"{net.host_ip}/30", "dev", v], "veth address")
    _run(["ip", "link", "set", v, "up"], "veth up")
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
    _run([*inside, "ip", "link", "set", "lo", "up"], "node lo")
    _run([*inside, "ip", "addr", "add", f"{net.node_ip}/30", "dev", "eth0"], "node address")
    _run([*inside, "ip", "link", "set", "eth0", "up"], "node link")
    # Forwarding between the link and the bridge, and bridged pod traffic through
    # iptables (Services between pods on the same bridge): both per network namespace.
    _run([*inside, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], "node ip_forward")
    # No default route in the node: only the host link and the pod bridge are reachable.
    for cidr in (net.pod_cidr, net.service_cidr):
        _run(["ip", "route", "replace", cidr, "via", net.node_ip, "dev", v], f"route {cidr}")
    for sub in _cgroup_hierarchies():
        (sub / net.cgroup_root.lstrip("/")).mkdir(exist_ok=True)
    _private_mounts(pid, node_dir(dev.paths.root))
    return pid


# The kubelet sets these host kernel tunables unless they already hold its values
# (protectKernelDefaults: false), or refuses to start (true). On a shared machine
# kernel.panic_on_oops=1 is not ours to set, so the node's mount namespace shows the
# kubelet files with its values instead; the host's stay as they are.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Fixed host paths the kubelet and containerd write to whatever their settings say:
# each gets a directory of this node instead (inside the node's mount namespace).
PRIVATE_DIRS = ("/var/log/containers", "/run/containerd")


def _private_mounts(holder: int, ndir: Path) -> None:
    script = ["set -e"]
    for path in PRIVATE_DIRS:
        own = ndir / "host" / path.strip("/").replace("/", "-")
        own.mkdir(parents=True, exist_ok=True)
        script.append(f"mkdir -p {path} && mount --bind {own} {path}")
    fake = ndir / "host" / "sysctl"
    fake.mkdir(parents=True, exist_ok=True)
    for key, value in KUBELET_SYSCTLS.items():
        proc = Path("/proc/sys") / key
        try:
            if proc.read_text().strip() == value:
                continue
        except OSError:
            continue
        f = fake / key.replace("/", ".")
        f.write_text(value + "\n")
        script.append(f"mount --bind {f} {proc}")
    _run(
        ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--", "sh", "-c", "\n".join(script)],
        "node mounts",
    )


def _cgroup_hierarchies() -> list[Path]:
    try:
        return sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


# -- start -------------------------------------------------------------------------------
def start(dev: DevCluster, state: dict[str, Any], net: NodeNet, pki: Pki, holder: int) -> None:
    """containerd, images, kubelet, kube-proxy; returns once the node is Ready."""
    from . import images

    ndir = node_dir(dev.paths.root)
    for sub in ("cni/net.d", "cni/ipam", "kubelet", "pod-logs", "runc", "containerd"):
        (ndir / sub).mkdir(parents=True, exist_ok=True)
    bin_dir = Path(state["binDir"])
    k8s = str(bin_dir / "berth-k8s")
    server = f"https://{net.host_ip}:{state['ports']['apiserver']}"

    (ndir / "containerd.toml").write_text(containerd_config(ndir, ndir / "runc"))
    (ndir / "cni" / "net.d" / "10-berth.conflist").write_text(
        json.dumps(cni_config(net, ndir / "cni" / "ipam"), indent=2)
    )
    kcrt, kkey = ensure_client_cert(pki, "kubelet", f"system:node:{NODE_NAME}", "system:nodes")
    pcrt, pkey = ensure_client_cert(pki, "kube-proxy", "system:kube-proxy", None)
    kubelet_kc, proxy_kc = ndir / "kubelet.kubeconfig", ndir / "kube-proxy.kubeconfig"
    kubelet_kc.write_text(yaml.safe_dump(kubeconfig_doc(server, pki.ca_crt, kcrt, kkey, NODE_NAME)))
    proxy_kc.write_text(
        yaml.safe_dump(kubeconfig_doc(server, pki.ca_crt, pcrt, pkey, "kube-proxy"))
    )
    (ndir / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(net, ndir, pki.ca_crt)))
    (ndir / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(net, proxy_kc)))

    dev._step("node: containerd (its own config, state and socket under the node directory)")
    sock = ndir / "containerd.sock"
    ctrd = dev._spawn(
        "containerd",
        in_node(holder, ["containerd", "--config", str(ndir / "containerd.toml")]),
        state,
        marker="containerd --config",
    )
    dev._wait(
        "containerd", lambda: _ctr_ok(sock), ctrd, str(dev.paths.log("containerd")), timeout=30
    )
    images.ensure_imported(dev, sock)

    dev._step(f"node: kubelet ({NODE_NAME} on {net.node_ip}) and kube-proxy (iptables)")
    kubelet = dev._spawn(
        "kubelet",
        in_node(
            holder,
            [
                k8s,
                "kubelet",
                f"--config={ndir / 'kubelet.yaml'}",
                f"--kubeconfig={kubelet_kc}",
                f"--root-dir={ndir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={net.node_ip}",
                f"--node-labels={NODE_LABEL}=true",
                "--v=1",
            ],
        ),
        state,
        marker=f"{k8s} kubelet",
    )
    proxy = dev._spawn(
        "kube-proxy",
        in_node(holder, [k8s, "kube-proxy", f"--config={ndir / 'kube-proxy.yaml'}", "--v=1"]),
        state,
        marker=f"{k8s} kube-proxy",
    )
    _wait_ready(dev, kubelet, proxy)
    advertise_gpus(dev)


def _ctr_ok(sock: Path) -> bool:
    if not sock.exists():
        return False
    proc = subprocess.run(
        ["ctr", "--address", str(sock), "version"], capture_output=True, timeout=5, check=False
    )
    return proc.returncode == 0


def _wait_ready(dev: DevCluster, kubelet: Any, proxy: Any, timeout: float = 90) -> None:
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Node

    client = dev.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in (("kubelet", kubelet), ("kube-proxy", proxy)):
            if proc.poll() is not None:
                raise NodeError(
                    f"{name}: exited with code {proc.returncode}; read {dev.paths.log(name)}"
                )
        try:
            node = client.get(Node, NODE_NAME)
            conds = (node.status.conditions or []) if node.status else []
            if any(c.type == "Ready" and c.status == "True" for c in conds):
                return
        except ApiError:
            pass
        time.sleep(0.2)
    raise NodeError(
        f"node {NODE_NAME} not Ready after {timeout:.0f}s; read {dev.paths.log('kubelet')}"
    )


def advertise_gpus(dev: DevCluster) -> None:
    """Fake `nvidia.com/gpu` capacity on the real node (an extended resource; see above)."""
    patch = {"status": {"capacity": {"nvidia.com/gpu": str(FAKE_GPUS)}}}
    dev.kubectl(
        "patch", "node", NODE_NAME, "--subresource=status", "--type=merge", "-p", json.dumps(patch)
    )
    dev.kubectl(
        "label", "node", NODE_NAME, "--overwrite", f"nvidia.com/gpu.product={FAKE_GPU_PRODUCT}"
    )


# -- stop --------------------------------------------------------------------------------
def _read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


def cgroup_pids(cgroup_root: str) -> set[int]:
    """Every process in the node's cgroup tree (the pods' containers)."""
    pids: set[int] = set()
    for sub in _cgroup_hierarchies():
        top = sub / cgroup_root.lstrip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                pids.update(_read_pids(procs))
    return pids


def remove_cgroups(cgroup_root: str) -> list[str]:
    """rmdir the node's cgroup tree, deepest first; return what could not be removed."""
    left = []
    for sub in _cgroup_hierarchies():
        top = sub / cgroup_root.lstrip("/")
        if not top.is_dir():
            continue
        dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
        for d in [*dirs, top]:
            try:
                d.rmdir()
            except OSError:
                left.append(str(d))
    return left


def _ctr_remove_all(sock: Path) -> None:
    """Delete every container (and its task and snapshot) from the node's containerd."""
    if not _ctr_ok(sock):
        return
    base = ["ctr", "--address", str(sock), "-n", "k8s.io"]
    ids = subprocess.run([*base, "containers", "ls", "-q"], capture_output=True, text=True).stdout
    ids_l = ids.split()
    if not ids_l:
        return
    for cid in ids_l:
        subprocess.run([*base, "tasks", "delete", "--force", cid], capture_output=True, timeout=30)
    subprocess.run([*base, "containers", "delete", *ids_l], capture_output=True, timeout=60)


def stop(dev: DevCluster, state: dict[str, Any], quiet: bool, grace: float) -> list[str]:
    """Stop the node and leave nothing behind; return what was stopped."""
    from .processes import kill_all, namespace_members, pid_alive, terminate_group

    comps: dict[str, Any] = state.get("components", {})
    node = state.get("node", {})
    ns_link = node.get("mntns")
    if ns_link == os.readlink("/proc/self/ns/mnt"):
        ns_link = None  # never sweep the host's own mount namespace
    stopped = []

    def stop_one(name: str) -> None:
        info = comps.get(name)
        if info and pid_alive(int(info["pid"]), info.get("marker")):
            if not quiet:
                dev._step(f"stopping {name} (pid {info['pid']})")
            terminate_group(int(info["pid"]), grace)
            stopped.append(name)

    stop_one("kubelet")
    stop_one("kube-proxy")
    ndir = node_dir(dev.paths.root)
    if "containerd" in comps and pid_alive(
        int(comps["containerd"]["pid"]), comps["containerd"].get("marker")
    ):
        # the sweep below kills what is left when this fails
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _ctr_remove_all(ndir / "containerd.sock")
    stop_one("containerd")
    stop_one("node-sandbox")
    # Whatever is left in the node's mount namespace (shims) or cgroups (containers).
    cgroup_root = node.get("cgroupRoot")
    for _ in range(20):  # kill_all waits; new processes may appear while shims die
        pids = (namespace_members("mnt", ns_link) if ns_link else set()) | (
            cgroup_pids(cgroup_root) if cgroup_root else set()
        )
        if not pids or not kill_all(pids, grace=0.5):
            break
    if cgroup_root:
        deadline = time.monotonic() + 10
        while remove_cgroups(cgroup_root) and time.monotonic() < deadline:
            time.sleep(0.2)
    veth = node.get("veth")
    if veth:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
    # Runtime state of the stopped node (the images stay in containerd's root).
    for sub in ("containerd/state", "kubelet", "cni/ipam", "runc", "pod-logs"):
        shutil.rmtree(ndir / sub, ignore_errors=True)
    for name in COMPONENTS:
        comps.pop(name, None)
    return stopped
