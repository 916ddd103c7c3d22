"""The gateway addon: `berth-runtime gateway` as a host process, scraped by Prometheus.

It starts with the operator (before it, so the operator is given its address for
`status.url`), listens on 127.0.0.1 (pods on the real node are reachable from the host),
watches every namespace, and resolves unprefixed paths in `default` (where
examples/local lives). Prometheus finds it through a file_sd targets file that this
addon writes (prometheus.GATEWAY_TARGETS in Prometheus' directory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import prometheus

if TYPE_CHECKING:
    from .cluster import DevCluster

NAME = "berth-gateway"
DEFAULT_PORT = 8088
RUNTIME = str(Path(sys.executable).parent / "berth-runtime")  # the console script of this venv


def url(dev: DevCluster) -> str:
    return str((dev.state.get("urls") or {}).get(NAME, ""))


def start_gateway(dev: DevCluster) -> None:
    from .state import free_port, http_ok, read_state, running_components, write_state

    if NAME in running_components(dev.paths):
        return
    port = free_port(DEFAULT_PORT)
    base = f"http://127.0.0.1:{port}"
    state = read_state(dev.paths)
    state.setdefault("urls", {})[NAME] = base
    write_state(dev.paths, state)
    dev._step(f"gateway: berth-runtime gateway on {base} (every model, scale from zero)")
    proc = dev._spawn(
        NAME,
        [RUNTIME, "gateway", "--host", "127.0.0.1", "--port", str(port)],
        state,
        env={"KUBECONFIG": str(dev.paths.kubeconfig)},
        marker=f"{RUNTIME} gateway",
    )
    dev._wait("gateway", lambda: http_ok(f"{base}/healthz"), proc, str(dev.paths.log(NAME)))
    targets = dev.paths.root / "prometheus" / prometheus.GATEWAY_TARGETS
    targets.parent.mkdir(parents=True, exist_ok=True)
    tmp = targets.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {}}]))
    tmp.replace(targets)  # Prometheus re-reads the file when it changes
