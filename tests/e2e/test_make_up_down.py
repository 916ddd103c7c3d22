"""`make up` then `make down` in a fresh dev directory leaves nothing behind.

Checked after `make down`: no process of the cluster (command line or working directory
in its directory, or inside the real node's cgroups or mount namespace), no listening
port it opened, no mount under its directory in any mount namespace, no network
namespace of the node (no process holds it), no host iptables rule, route or veth
naming its addresses or link, no cgroup of the node.

It runs the real targets in a subprocess with BERTH_DEV_DIR set to a temporary directory,
so it starts a second, private cluster beside any shared one (its own free ports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def listening_ports() -> set[tuple[str, int]]:
    """(hex address, port) of every listening TCP socket (IPv4 and IPv6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                addr, port = fields[1].rsplit(":", 1)
                out.add((addr, int(port, 16)))
    return out


def _ipv4(hex_addr: str) -> str:
    """/proc/net/tcp's little-endian hex IPv4 address as dotted quad ('' for IPv6)."""
    if len(hex_addr) != 8:
        return ""
    return ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))


def _in_dev_range(hex_addr: str) -> bool:
    """Whether the address lies in 198.18.0.0/15, where every dev cluster takes its own."""
    return _ipv4(hex_addr).startswith(("198.18.", "198.19."))


def processes_in(root: Path) -> list[str]:
    """Processes whose command line or working directory lies in `root`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{proc.name}: {cmdline[:160]} (cwd {cwd})")
    return found


def host_network_mentions(words: list[str]) -> list[str]:
    """Lines of the host's iptables rules, routes and links that name one of `words`."""
    out = []
    for argv in (["iptables-save"], ["ip", "-4", "route", "show"], ["ip", "link", "show"]):
        text = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        out += [f"{argv[0]}: {line}" for line in text.splitlines() if any(w in line for w in words)]
    return out


def node_leftovers(root: Path, node: dict[str, str]) -> list[str]:
    """Mounts, namespaces and cgroups of the real node still on the machine."""
    found = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            text = info.read_text()
        except OSError:
            continue
        found += [
            f"mount in {info.parent.name}: {m[:160]}" for m in text.splitlines() if str(root) in m
        ]
        try:
            if os.readlink(info.parent / "ns" / "mnt") == node.get("mntns"):
                found.append(f"process {info.parent.name} in the node's mount namespace")
        except OSError:
            pass
    cg = node["cgroupRoot"].lstrip("/")
    found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{cg}")]
    return found


def _netns(proc: Path) -> str | None:
    try:
        return os.readlink(proc / "ns" / "net")
    except OSError:
        return None


def test_make_up_then_down_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    env = {**os.environ, "BERTH_DEV_DIR": str(root)}
    env.pop("KUBECONFIG", None)
    before = listening_ports()
    t0 = time.monotonic()
    up = subprocess.run(
        ["make", "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=720
    )
    up_s = time.monotonic() - t0
    try:
        assert up.returncode == 0, f"make up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        print(f"\nmake up: {up_s:.0f}s")
        out = up.stdout + up.stderr
        assert "Ready after" in out and "/v1/embeddings" in out and "Prometheus:" in out
        status = subprocess.run(
            [str(REPO / ".venv/bin/berth"), "dev", "status", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        st = json.loads(status.stdout)
        comps = st["components"]
        for name in ("kube-apiserver", "prometheus", "berth-operator", "berth-gateway"):
            assert comps[name]["state"] == "running", comps
            assert comps[name]["url"], name
        # make up prints the gateway's address, and every example answers through it
        gateway = comps["berth-gateway"]["url"]
        assert f"Gateway: {gateway}" in out and f"curl -s {gateway}/v1/embeddings" in out
        with urllib.request.urlopen(f"{gateway}/v1/models", timeout=10) as resp:
            listed = json.loads(resp.read())["data"]
        assert {m["id"] for m in listed if m["ready"]} >= {"minilm", "small-cnn", "tiny-chat"}
        state = json.loads((root / "state.json").read_text())
        ours = set(state["ports"].values())
        ours |= {int(u.rsplit(":", 1)[1].split("/")[0]) for u in state.get("urls", {}).values()}
        node = state["node"]
        for name in ("containerd", "kubelet", "kube-proxy", "node-sandbox"):
            assert comps[name]["state"] == "running", comps
        words = [node["veth"], node["podCIDR"], node["serviceCIDR"], node["hostIP"]]
        assert host_network_mentions(words), "the node's link and routes not found"
        assert node_leftovers(root, node), "the node's mounts and cgroups not found"
        holder = comps["node-sandbox"]["pid"]
        rules = subprocess.run(
            ["nsenter", f"--net=/proc/{holder}/ns/net", "iptables-save"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "KUBE-SERVICES" in rules  # kube-proxy's rules live in the node's namespace
        netns = os.readlink(f"/proc/{holder}/ns/net")
        # another dev cluster on this machine (its own BERTH_DEV_DIR) listens on the same port
        # numbers on its own 198.18.0.0/15 address: only this cluster's addresses are ours
        hosts = {state["server"].split("//")[1].rsplit(":", 1)[0], node["hostIP"], node["nodeIP"]}
        hosts |= {u.split("//")[1].rsplit(":", 1)[0] for u in state.get("urls", {}).values()}
        during = {
            p for p in listening_ports() - before
            if p[1] in ours and (not _in_dev_range(p[0]) or _ipv4(p[0]) in hosts)
        }  # fmt: skip
        assert len(during) >= 5, f"make up's listeners not found: {during}"
    finally:
        t1 = time.monotonic()
        down = subprocess.run(
            ["make", "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        print(f"make down: {time.monotonic() - t1:.0f}s")
    assert down.returncode == 0, down.stderr
    assert processes_in(root) == []
    left = listening_ports() & during
    assert not left, f"ports still listening after make down: {sorted(left)}"
    assert host_network_mentions(words) == []
    assert node_leftovers(root, node) == []
    holders = [p.name for p in Path("/proc").glob("[0-9]*") if _netns(p) == netns]
    assert holders == [], f"processes still in the node's network namespace: {holders}"
    shutil.rmtree(root, ignore_errors=True)  # the node's image store is gigabytes
