"""The Prometheus scrape configuration of the dev cluster (a pure builder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from berth_dev.prometheus import scrape_config

pytestmark = pytest.mark.unit


def test_prometheus_config_keeps_annotated_pods_of_the_real_node() -> None:
    cfg = scrape_config(
        "https://127.0.0.1:6443", Path("/ca"), Path("/c"), Path("/k"), nodes=["local-node-0"]
    )
    job = cfg["scrape_configs"][0]
    sd = job["kubernetes_sd_configs"][0]
    assert sd["api_server"] == "https://127.0.0.1:6443" and sd["tls_config"]["ca_file"] == "/ca"
    assert sd["selectors"] == [{"role": "pod", "field": "spec.nodeName=local-node-0"}]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"__address__", "__metrics_path__", "namespace", "pod", "node"} <= targets
