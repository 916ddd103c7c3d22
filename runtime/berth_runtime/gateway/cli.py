"""``berth-runtime gateway``: flags over BERTH_GATEWAY_* variables, then serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from berth_runtime.gateway.settings import GatewaySettingsError, from_env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="berth-runtime gateway",
        description="One entry point for every model: routes by model name over the "
        "EndpointSlices of ModelDeployments, holds requests while a model scales from zero.",
    )
    p.add_argument("--host", help="listen address (BERTH_GATEWAY_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (BERTH_GATEWAY_PORT, default 8080)")
    p.add_argument("--namespaces", help="comma-separated namespaces to watch (default: all)")
    p.add_argument("--default-namespace", help="where unprefixed paths resolve ('*': any)")
    p.add_argument("--hold-seconds", type=float, help="hold deadline (default 60)")
    p.add_argument("--hold-max-requests", type=int, help="held requests per model (1000)")
    p.add_argument("--hold-max-bytes", type=int, help="held body bytes per model (64 MiB)")
    p.add_argument("--static", help="name=host:port,... routes without Kubernetes")
    p.add_argument("--log-level", help="debug, info, warning")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = from_env(os.environ, {k: v for k, v in vars(args).items() if v is not None})
    except GatewaySettingsError as exc:
        print(f"berth-runtime gateway: {exc}", file=sys.stderr)
        return 2
    if settings.static:
        from berth_runtime.gateway.routing import static_table

        try:
            static_table(settings.static)
        except ValueError as exc:
            print(f"berth-runtime gateway: --static: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from berth_runtime.gateway.server import serve

    return serve(settings)
