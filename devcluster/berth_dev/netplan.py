"""Addresses of one dev cluster's real node (pure: plain data in, plain data out).

Every dev cluster on the machine gets its own /21 block of 198.18.0.0/15 (the
benchmarking range: not private, never routed off this machine), so two clusters (a
test's private one beside the shared one) never share an address:

    block + 0    .. + 255    Service ClusterIPs (/24; the `kubernetes` Service is +1)
    block + 256  .. + 511    pod IPs (/24; the node's CNI bridge is +257)
    block + 512  .. + 515    the link between the host and the node (/30):
                             +513 host end (the API server listens here), +514 node end
    block + 1024 .. + 2047   addresses KWOK writes into its fake pods (never routed)

The real node runs in its own network namespace (its own iptables for kube-proxy, its
own bridge), joined to the host by a veth pair; the host routes the pod and Service
ranges over that link. The node namespace has no default route, so nothing a pod sends
can leave the machine.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from pathlib import Path

RANGE = ipaddress.ip_network("198.18.0.0/15")
BLOCK = 2048  # addresses per cluster (/21)
BLOCKS = RANGE.num_addresses // BLOCK  # 64


@dataclass(frozen=True)
class NodeNet:
    """The addresses and names of the real node of the cluster with block `index`."""

    index: int
    tag: str  # 8 hex digits naming this cluster's host-side objects

    def __post_init__(self) -> None:
        if not 0 <= self.index < BLOCKS:
            raise ValueError(f"index: must be in [0, {BLOCKS}), got {self.index}")

    def _at(self, offset: int) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(int(RANGE.network_address) + self.index * BLOCK + offset)

    @property
    def service_cidr(self) -> str:
        return f"{self._at(0)}/24"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(self._at(1))

    @property
    def pod_cidr(self) -> str:
        return f"{self._at(256)}/24"

    @property
    def pod_gateway(self) -> str:
        return str(self._at(257))

    @property
    def host_ip(self) -> str:
        return str(self._at(513))

    @property
    def node_ip(self) -> str:
        return str(self._at(514))

    @property
    def fake_pod_cidr(self) -> str:
        """KWOK's fake pods (no packet ever reaches them): the upper half of the block."""
        return f"{self._at(1025)}/22"

    @property
    def fake_node_ip(self) -> str:
        return str(self._at(1024))

    @property
    def veth_host(self) -> str:
        return f"bn{self.tag}"  # 10 characters: interface names stop at 15

    @property
    def cgroup_root(self) -> str:
        return f"/berth-{self.tag}"


def cluster_tag(root: Path) -> str:
    return f"{zlib.crc32(str(root.resolve()).encode()):08x}"


def preferred_index(root: Path) -> int:
    return zlib.crc32(str(root.resolve()).encode()) % BLOCKS


def choose(root: Path, taken: set[int]) -> NodeNet:
    """The first block from the cluster's preferred one that no other cluster holds."""
    start = preferred_index(root)
    for i in range(BLOCKS):
        index = (start + i) % BLOCKS
        if index not in taken:
            return NodeNet(index, cluster_tag(root))
    raise ValueError(f"all {BLOCKS} address blocks of {RANGE} are in use by other dev clusters")


def index_of(address: str) -> int | None:
    """The block index of an address in the range, else None."""
    ip = ipaddress.ip_address(address)
    if ip not in RANGE:
        return None
    return (int(ip) - int(RANGE.network_address)) // BLOCK
