"""The real node's address plan and configuration builders (pure functions)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from berth_dev import netplan, node
from berth_dev.netplan import NodeNet

pytestmark = pytest.mark.unit

RANGE = ipaddress.ip_network("198.18.0.0/15")


def test_every_block_stays_in_the_benchmarking_range_and_apart() -> None:
    seen: set[ipaddress.IPv4Address] = set()
    for index in range(netplan.BLOCKS):
        net = NodeNet(index, "00000000")
        nets = [
            ipaddress.ip_network(net.service_cidr),
            ipaddress.ip_network(net.pod_cidr),
            ipaddress.ip_network(net.fake_pod_cidr, strict=False),
        ]
        ips = [ipaddress.ip_address(a) for a in (net.host_ip, net.node_ip, net.pod_gateway)]
        for n in nets:
            assert n.subnet_of(RANGE), n  # type: ignore[arg-type]
        assert all(ip in RANGE for ip in ips)
        assert ipaddress.ip_address(net.kubernetes_service_ip) in nets[0]
        assert ipaddress.ip_address(net.pod_gateway) in nets[1]
        assert not nets[0].overlaps(nets[1]) and not nets[1].overlaps(nets[2])
        block = set(ipaddress.ip_network(f"{net.service_cidr.split('/')[0]}/21"))
        assert not (block & seen), f"block {index} overlaps another"
        seen |= block
        assert netplan.index_of(net.node_ip) == index


def test_choose_skips_blocks_other_clusters_hold() -> None:
    root = Path("/tmp/some-dev-dir")
    first = netplan.choose(root, set())
    assert first.index == netplan.preferred_index(root)
    second = netplan.choose(root, {first.index})
    assert second.index == (first.index + 1) % netplan.BLOCKS
    with pytest.raises(ValueError, match="in use"):
        netplan.choose(root, set(range(netplan.BLOCKS)))
    assert netplan.index_of("10.0.0.1") is None
    with pytest.raises(ValueError, match="index"):
        NodeNet(netplan.BLOCKS, "x")


def test_names_fit_the_kernel_limits() -> None:
    net = netplan.choose(Path("/a/very/long/path/" + "x" * 200), set())
    assert len(net.veth_host) <= 15
    assert net.cgroup_root.startswith("/berth-")


def test_node_configs_keep_everything_under_the_node_directory() -> None:
    net = NodeNet(3, "abcdef01")
    ndir = Path("/dev-dir/node")
    toml = node.containerd_config(ndir, ndir / "runc")
    for line in toml.splitlines():
        if line.strip().startswith(
            ("root =", "state =", "address =", "path =", "conf_dir =", "Root =")
        ):
            assert "/dev-dir/node/" in line, line
    assert "restrict_oom_score_adj = true" in toml
    assert node.SANDBOX_IMAGE in toml
    cni = node.cni_config(net, ndir / "cni" / "ipam")
    ipam = cni["plugins"][0]["ipam"]
    assert ipam["ranges"][0][0]["subnet"] == net.pod_cidr
    assert ipam["dataDir"] == "/dev-dir/node/cni/ipam"
    kubelet = node.kubelet_config(net, ndir, Path("/ca"))
    assert kubelet["cgroupRoot"] == net.cgroup_root and kubelet["failCgroupV1"] is False
    assert kubelet["address"] == net.node_ip and kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    proxy = node.kube_proxy_config(net, ndir / "kp.kubeconfig")
    assert proxy["mode"] == "iptables" and proxy["clusterCIDR"] == net.pod_cidr
