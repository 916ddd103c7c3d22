"""Settings of the local dev cluster: where it lives, its ports, its fake nodes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"  # KWOK manages nodes annotated `fake`


class ConfigError(ValueError):
    """A node-pool file or flag is wrong; the message names the field."""


@dataclass(frozen=True)
class NodePool:
    """A group of identical fake nodes, named kwok-<name>-<index>."""

    name: str
    count: int = 1
    gpus: int = 0  # nvidia.com/gpu capacity per node
    product: str = ""  # nvidia.com/gpu.product label; empty for CPU-only nodes
    cpu: str = "32"  # allocatable CPU per node
    memory: str = "256Gi"  # allocatable memory per node
    pods: int = 110  # pods per node, the kubelet default
    # allocatable ephemeral-storage per node: model pods request some (operator settings)
    ephemeral_storage: str = "2Ti"
    taint_gpu: bool = True  # GPU pools carry nvidia.com/gpu=present:NoSchedule

    def node_names(self) -> list[str]:
        return [f"kwok-{self.name}-{i}" for i in range(self.count)]


DEFAULT_POOLS: tuple[NodePool, ...] = (
    NodePool("h100", count=2, gpus=8, product="NVIDIA-H100-80GB-HBM3", cpu="192", memory="2Ti"),
    NodePool("a100", count=1, gpus=8, product="NVIDIA-A100-SXM4-40GB", cpu="96", memory="1Ti"),
    NodePool("cpu", count=1, gpus=0, cpu="32", memory="128Gi"),
)


def default_root() -> Path:
    """The dev cluster's directory: $BERTH_DEV_DIR or ~/.local/state/berth/dev."""
    env = os.environ.get("BERTH_DEV_DIR")
    if env:
        return Path(env).expanduser().resolve()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "berth" / "dev"


@dataclass(frozen=True)
class DevConfig:
    root: Path = field(default_factory=default_root)
    pools: tuple[NodePool, ...] = DEFAULT_POOLS
    apiserver_port: int = 6443  # a free port is chosen when this one is taken
    # Service, pod and node addresses are chosen per cluster from 198.18.0.0/15
    # (netplan.py), so that clusters beside each other never overlap.


_POOL_FIELDS = {f for f in NodePool.__dataclass_fields__}


def pool_from_dict(data: Any, where: str) -> NodePool:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(_POOL_FIELDS)}")
    unknown = set(data) - _POOL_FIELDS
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_POOL_FIELDS)}"
        )
    if "name" not in data or not isinstance(data["name"], str) or not data["name"]:
        raise ConfigError(f"{where}.name: required, a non-empty string")
    for key in ("count", "gpus", "pods"):
        if key in data and (not isinstance(data[key], int) or data[key] < 0):
            raise ConfigError(f"{where}.{key}: must be an integer >= 0, got {data[key]!r}")
    for key in ("cpu", "memory", "product"):
        if key in data:
            data[key] = str(data[key])
    return NodePool(**data)


def load_pools(path: Path) -> tuple[NodePool, ...]:
    """Read `nodePools:` from a YAML file (see hack/nodes.example.yaml)."""
    doc = yaml.safe_load(path.read_text()) or {}
    pools = doc.get("nodePools") if isinstance(doc, dict) else None
    if not isinstance(pools, list):
        raise ConfigError(f"{path}: nodePools: expected a list of pools")
    return tuple(pool_from_dict(p, f"{path}: nodePools[{i}]") for i, p in enumerate(pools))


def parse_pool_flag(text: str) -> NodePool:
    """`name=h100,count=100,gpus=8,product=NVIDIA-H100-80GB-HBM3` -> NodePool."""
    data: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"--node-pool {text!r}: expected key=value pairs, got {part!r}")
        data[key.strip()] = int(value) if key.strip() in ("count", "gpus", "pods") else value
    return pool_from_dict(data, f"--node-pool {text!r}")


@dataclass(frozen=True)
class Addons:
    """Which parts to start after the control plane (the CLI's --no-* flags)."""

    node: bool = True  # the real node: containerd + kubelet + kube-proxy (node.py)
    prometheus: bool = True  # a real Prometheus scraping the real node's pods
    operator: bool = True  # CRDs + `berth operator run`
    examples: bool = True  # examples/local: models + weights in the local PVC directory
    # the operator installed with the chart (charts/berth), in-cluster on the real node,
    # instead of a host process; `berth dev up` sets it, test fixtures keep the process
    operator_in_cluster: bool = False

    @classmethod
    def none(cls) -> Addons:
        return cls(node=False, prometheus=False, operator=False, examples=False)
