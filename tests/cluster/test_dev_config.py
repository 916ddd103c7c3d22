"""Pure parts of the dev cluster: node-pool parsing and fake node manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from berth_dev.config import DEFAULT_POOLS, ConfigError, NodePool, load_pools, parse_pool_flag
from berth_dev.nodes import node_manifest, pool_manifests

pytestmark = pytest.mark.unit


def test_default_pools_match_the_issue() -> None:
    names = [m["metadata"]["name"] for m in pool_manifests(DEFAULT_POOLS)]
    assert names == ["kwok-h100-0", "kwok-h100-1", "kwok-a100-0", "kwok-cpu-0"]


def test_gpu_node_manifest() -> None:
    m = node_manifest(NodePool("h100", count=1, gpus=8, product="NVIDIA-H100-80GB-HBM3"), "n0")
    assert m["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert m["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert m["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert m["status"]["allocatable"] == m["status"]["capacity"]
    assert m["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]


def test_cpu_node_has_no_gpu_and_no_taint() -> None:
    m = node_manifest(NodePool("cpu"), "c0")
    assert "nvidia.com/gpu" not in m["status"]["capacity"]
    assert "nvidia.com/gpu.product" not in m["metadata"]["labels"]
    assert m["spec"] == {}


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        # every field given
        ("name=h100,count=100,gpus=8,product=P", NodePool("h100", count=100, gpus=8, product="P")),
        # only the name: defaults fill the rest
        ("name=cpu", NodePool("cpu")),
    ],
)
def test_parse_pool_flag(flag: str, expected: NodePool) -> None:
    assert parse_pool_flag(flag) == expected


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("count=2", "name: required"),  # a pool needs a name
        ("name=x,colour=red", "unknown field(s) ['colour']"),  # typo in a key
        ("name=x,count", "expected key=value"),  # no value
        ("name=x,gpus=-1", "gpus: must be an integer >= 0"),  # negative capacity
    ],
)
def test_parse_pool_flag_errors_name_the_field(flag: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_pool_flag(flag)
    assert message in str(err.value)


def test_load_pools_example_file() -> None:
    pools = load_pools(Path(__file__).parents[2] / "hack" / "nodes.example.yaml")
    assert [p.name for p in pools] == ["h100", "cpu"]
    assert pools[0].count == 100 and pools[0].gpus == 8
