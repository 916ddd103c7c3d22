"""A real Prometheus for the dev cluster: its configuration (pure) and how to launch it.

Prometheus discovers pods through `kubernetes_sd_configs` against the local API server
(client certificate from the dev PKI) and scrapes the ones the operator marks with
`prometheus.io/scrape: "true"`, at `<pod IP>:<prometheus.io/port><prometheus.io/path>`.
Only pods on the real node are discovered (a field selector per node): KWOK's
fake pods have no process behind their addresses, and there may be thousands of them. Every series carries `namespace`,
`pod`, `node` and, for Berth runtime pods, `modeldeployment` (the serving.berth.dev/model label; the runtime's own `model` label is the served name).

The binary is built from Go modules by hack/install-prometheus.sh (Debian's package has
no Kubernetes service discovery) and runs as our own process with our own configuration
and data directory under `<root>/prometheus`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

INSTALL_SCRIPT = Path(__file__).resolve().parent.parent.parent / "hack" / "install-prometheus.sh"
DEFAULT_PORT = 9090
GATEWAY_TARGETS = "gateway-targets.json"  # file_sd: the gateway addon writes its address
SCRAPE_INTERVAL = "2s"  # short so a test sees a new counter value within seconds
RETENTION = "2d"  # a dev cluster needs little history


def scrape_config(
    api_server: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    nodes: list[str] | None = None,
    interval: str = SCRAPE_INTERVAL,
) -> dict[str, Any]:
    """prometheus.yml as a dict."""
    sd: dict[str, Any] = {
        "role": "pod",
        "api_server": api_server,
        "tls_config": {
            "ca_file": str(ca_file),
            "cert_file": str(cert_file),
            "key_file": str(key_file),
        },
    }
    if nodes:
        # one watch per node keeps Prometheus off the (possibly thousands of) KWOK pods
        sd_list = [
            {**sd, "selectors": [{"role": "pod", "field": f"spec.nodeName={n}"}]} for n in nodes
        ]
    else:
        sd_list = [sd]
    meta = "__meta_kubernetes_pod_"
    relabel = [
        {
            "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {"source_labels": [f"{meta}phase"], "action": "drop", "regex": "Succeeded|Failed"},
        {
            "source_labels": [f"{meta}annotation_prometheus_io_path"],
            "action": "replace",
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        {
            "source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
            "action": "replace",
            "regex": r"(.+);(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": [f"{meta}name"], "target_label": "pod"},
        {"source_labels": [f"{meta}node_name"], "target_label": "node"},
        {
            "source_labels": [f"{meta}label_serving_berth_dev_model"],
            "regex": "(.+)",
            "target_label": "modeldeployment",
        },
    ]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "berth-pods",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "kubernetes_sd_configs": sd_list,
                "relabel_configs": relabel,
            },
            {
                # the gateway's own series carry namespace / modeldeployment: keep them
                "job_name": "berth-gateway",
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "honor_labels": True,
                "file_sd_configs": [{"files": [GATEWAY_TARGETS], "refresh_interval": "5s"}],
            },
        ],
    }


def find_binary() -> str:
    """The prometheus binary from hack/install-prometheus.sh (a no-op with a warm cache)."""
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise FileNotFoundError(
            f"installing Prometheus failed; run `bash {INSTALL_SCRIPT}` to see why"
        )
    return proc.stdout.strip().splitlines()[-1]


def argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        # tests write series the way Prometheus stores scraped ones (tests/autoscaling)
        "--web.enable-remote-write-receiver",
        "--log.level=warn",
    ]
