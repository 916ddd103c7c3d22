"""`berth operator ...`: run the ModelDeployment operator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import urllib.parse
from typing import Any

USAGE = (
    "berth operator run [--namespace NS ... | --all-namespaces] [--leader-elect LEASE] "
    "[--prometheus-url URL] [--verbose] | berth operator version\n"
    "       berth operator admission-policy   (print the tenant allowlists' policy as YAML)"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="berth operator", usage=USAGE)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="watch ModelDeployments and reconcile their children")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="serve only this namespace (repeatable)")  # fmt: skip
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="serve all namespaces (the default)")  # fmt: skip
    run.add_argument("--standalone", action="store_true", default=True,
                     help="no peering with other operator instances (the default)")  # fmt: skip
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="use KopfPeering NAME for leader election instead of standalone",
    )
    run.add_argument(
        "--leader-elect",
        metavar="LEASE",
        help="hold coordination.k8s.io Lease LEASE (in $POD_NAMESPACE) before acting, so "
        "one replica of several acts; identity $POD_NAME (the chart sets both)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8081/healthz",
    )
    run.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="Prometheus the autoscaler queries (else BERTH_OPERATOR_AUTOSCALING_PROMETHEUS_URL)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="log every handler run")
    sub.add_parser("version", help="print the installed berth-operator version")
    sub.add_parser("apply-crds", help="server-side apply Berth's CRDs (the chart's upgrade hook)")
    sub.add_parser(
        "admission-policy",
        help="print the ValidatingAdmissionPolicy, binding and params built from "
        "BERTH_OPERATOR_TENANT_* (for kubectl apply or the Helm chart)",
    )
    return p


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("berth-operator")
    except PackageNotFoundError:
        return "unknown"


async def _standby_health(url: str | None) -> Any:
    """While a standby waits for the Lease, answer its liveness probe (200, "standby")."""
    if not url:
        return None
    parsed = urllib.parse.urlsplit(url)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readline(), 5)
            body = b'{"standby": true}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, parsed.hostname, parsed.port or 80)


def login(**kwargs: Any) -> Any:
    """Kopf's login: $KUBECONFIG when set; in a pod, the ServiceAccount token against
    https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (as client-go's in-cluster
    config does; Kopf's own default asks DNS for kubernetes.default.svc, which a cluster
    without cluster DNS cannot answer); else ~/.kube/config."""
    import kopf

    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    if not os.environ.get("KUBECONFIG") and host:
        info = kopf.login_with_service_account(**kwargs)
        if info is not None:
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            return dataclasses.replace(info, server=server)
    return kopf.login_with_kubeconfig(**kwargs)


async def _run_elected(lease: str, kopf_args: dict[str, Any]) -> int:
    import kopf

    from berth_operator.leader import ElectionSettings, Elector

    namespace = os.environ.get("POD_NAMESPACE", "")
    if not namespace:
        raise SystemExit(
            "berth operator: --leader-elect needs $POD_NAMESPACE (the Lease's namespace)"
        )
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = Elector(ElectionSettings(name=lease, namespace=namespace, identity=identity))
    standby = await _standby_health(kopf_args.get("liveness_endpoint"))
    await elector.acquire()
    if standby is not None:
        standby.close()
        await standby.wait_closed()
    stop = asyncio.Event()
    lost = False

    def on_lost() -> None:
        nonlocal lost
        lost = True
        stop.set()

    keeper = asyncio.create_task(elector.keep(on_lost))
    try:
        await kopf.operator(stop_flag=stop, **kopf_args)
    finally:
        keeper.cancel()
        if not lost:
            await elector.release()
    # a replica that lost the Lease exits non-zero: the kubelet restarts it as a standby
    return 1 if lost else 0


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena (up to 8 x cores); the operator is
    one event loop plus helper threads, so two arenas keep RSS down at no cost."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "version":
        print(f"berth-operator {version()}")
        return 0
    if args.command == "apply-crds":
        from berth_operator import apply_crds

        return apply_crds.main([])
    if args.command == "admission-policy":
        import yaml

        from berth_operator import admission
        from berth_operator.settings import from_env

        print(yaml.safe_dump_all(admission.manifests(from_env()), sort_keys=False), end="")
        return 0
    # Imported here so that `berth --help` stays fast.
    import kopf

    from berth_operator import handlers
    from berth_operator.settings import from_env

    settings = from_env()
    if args.prometheus_url:
        scaling = dataclasses.replace(settings.autoscaling, prometheus_url=args.prometheus_url)
        settings = dataclasses.replace(settings, autoscaling=scaling)
    handlers.configure(settings)
    kopf.on.login()(login)
    _limit_malloc_arenas()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Kopf logs every handler success per object; at 500 objects that is noise.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    for noisy in ("httpx", "httpx2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    kopf_args: dict[str, Any] = {
        "standalone": args.peering is None,
        "peering_name": args.peering,
        "namespaces": list(args.namespace),
        "clusterwide": not args.namespace,
        "liveness_endpoint": args.liveness,
    }
    if args.leader_elect:
        return asyncio.run(_run_elected(args.leader_elect, kopf_args))
    kopf.run(**kopf_args)
    return 0
