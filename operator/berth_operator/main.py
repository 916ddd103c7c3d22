"""`berth operator ...`: run the ModelDeployment operator."""

from __future__ import annotations

import argparse
import dataclasses
import logging

USAGE = (
    "berth operator run [--namespace NS ... | --all-namespaces] [--standalone] "
    "[--prometheus-url URL] [--verbose]\n"
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
    sub.add_parser(
        "admission-policy",
        help="print the ValidatingAdmissionPolicy, binding and params built from "
        "BERTH_OPERATOR_TENANT_* (for kubectl apply or the Helm chart)",
    )
    return p


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
    kopf.run(
        standalone=args.peering is None,
        peering_name=args.peering,
        namespaces=list(args.namespace),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0
