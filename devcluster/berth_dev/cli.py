"""`berth dev up | down | status | kubeconfig`: the local cluster from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .cluster import DevCluster, DevClusterError, build_binaries, reachable_external_cluster
from .config import Addons, ConfigError, DevConfig, load_pools, parse_pool_flag


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="berth dev", description="Berth's local cluster")
    p.add_argument(
        "--dir",
        type=Path,
        help="cluster directory (default $BERTH_DEV_DIR or ~/.local/state/berth/dev)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the local cluster")
    up.add_argument(
        "--nodes", type=Path, help="YAML file with nodePools (see hack/nodes.example.yaml)"
    )
    up.add_argument(
        "--node-pool",
        action="append",
        default=[],
        metavar="SPEC",
        help="a pool as name=h100,count=2,gpus=8,product=NVIDIA-H100-80GB-HBM3 (repeatable; replaces the defaults)",
    )
    up.add_argument(
        "--force-local",
        action="store_true",
        help="start a local cluster even when $KUBECONFIG names a reachable one",
    )
    up.add_argument(
        "--operator-process",
        action="store_true",
        help="run the operator as a host process instead of installing it with the chart",
    )
    up.add_argument(
        "--values",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="Helm values for installing into the cluster $KUBECONFIG names (repeatable)",
    )
    up.add_argument("--release", default="berth", help="Helm release name (default berth)")
    up.add_argument(
        "--namespace",
        default="berth-system",
        help="namespace of the release (default berth-system)",
    )
    for addon, what in (
        ("node", "the real node (containerd, kubelet, kube-proxy) that runs model pods"),
        ("prometheus", "Prometheus"),
        ("operator", "the CRDs and the operator"),
        ("examples", "the examples/local models"),
    ):
        up.add_argument(f"--no-{addon}", action="store_true", help=f"do not start {what}")
    sub.add_parser("down", help="stop the local cluster, leaving no process behind")
    st = sub.add_parser("status", help="show each component with its state and URL")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("kubeconfig", help="print the kubeconfig path")
    return p


def _config(args: argparse.Namespace) -> DevConfig:
    cfg = DevConfig() if args.dir is None else DevConfig(root=args.dir.expanduser().resolve())
    if getattr(args, "nodes", None):
        cfg = replace(cfg, pools=load_pools(args.nodes))
    if getattr(args, "node_pool", None):
        cfg = replace(cfg, pools=tuple(parse_pool_flag(s) for s in args.node_pool))
    return cfg


def usage_text(cluster: DevCluster) -> str:
    from .examples import examples_text

    kc = cluster.paths.kubeconfig
    return "\n".join(
        [
            "",
            "Berth dev cluster is up.",
            f"  export KUBECONFIG={kc}",
            f"  export PATH={cluster.bin_dir}:$PATH      # the matching kubectl",
            "  kubectl get nodes -L nvidia.com/gpu.product",
            "  berth dev status",
            "  make down                                  # or: berth dev down",
            *examples_text(cluster),
        ]
    )


def cmd_up(args: argparse.Namespace) -> int:
    cluster = DevCluster(_config(args))
    addons = Addons(
        node=not args.no_node,
        prometheus=not args.no_prometheus,
        operator=not args.no_operator,
        examples=not args.no_examples and not args.no_node and not args.no_operator,
        operator_in_cluster=not args.operator_process,
    )
    if cluster.is_running():
        print(f"berth dev: a local cluster is already running in {cluster.paths.root}")
        try:
            cluster.start_addons(addons)  # the parts it lacks (a test may start only some)
        except DevClusterError as err:
            print(f"berth dev up: {err}", file=sys.stderr)
            return 1
        print(usage_text(cluster))
        return 0
    bin_dir = build_binaries()
    if not args.force_local:
        external = reachable_external_cluster(bin_dir / "kubectl", cluster.paths.kubeconfig)
        if external:
            if args.no_operator:
                print(
                    f"berth dev: KUBECONFIG already names a reachable cluster ({external}); "
                    "--no-operator: installing nothing and starting no local cluster."
                )
                return 0
            return install_external(external, args.values, args.release, args.namespace)
    try:
        cluster.up(bin_dir, addons)
    except DevClusterError as err:
        print(f"berth dev up: {err}", file=sys.stderr)
        cluster.down(quiet=True)
        return 1
    except BaseException:
        cluster.down(quiet=True)  # never leave half a cluster running
        raise
    print(usage_text(cluster))
    return 0


def install_external(server: str, values: list[Path], release: str, namespace: str) -> int:
    """Install Berth with its chart into the cluster $KUBECONFIG names (after saying so)."""
    import os

    from . import chart

    print(
        f"berth dev: KUBECONFIG already names a reachable cluster ({server}): installing Berth into it "
        f"with the chart (helm upgrade --install {release} charts/berth -n {namespace}). "
        "`berth dev up --force-local` starts a local cluster instead."
    )
    extra = [a for v in values for a in ("--values", str(v))]
    try:
        seconds = chart.install(
            os.environ["KUBECONFIG"], release=release, namespace=namespace, extra=extra
        )
    except chart.ChartError as err:
        print(f"berth dev up: {err}", file=sys.stderr)
        return 1
    print(f"berth dev: Berth installed in {seconds:.0f}s.")
    # the chart's NOTES: what was installed and the gateway's address (in the cluster, and
    # from here with a port-forward), through which every model is reached
    notes = chart.helm(
        ["get", "notes", release, "--namespace", namespace], os.environ["KUBECONFIG"], check=False
    )
    print(notes.stdout.strip() if notes.returncode == 0 else f"  kubectl -n {namespace} get pods")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = DevCluster(_config(args))
    stopped = cluster.down()
    print(
        "berth dev: stopped "
        + (", ".join(stopped) if stopped else "nothing (no cluster was running)")
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = DevCluster(_config(args)).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["running"] else 3
    if not st["components"]:
        print(f"berth dev: no cluster in {st['root']}")
        return 3
    for name, c in st["components"].items():
        print(f"{name:<26} {c['state']:<8} pid {c['pid'] or '-'!s:<8} {c['url'] or ''}")
    if st["running"]:
        print(f"\nexport KUBECONFIG={st['kubeconfig']}")
    return 0 if st["running"] else 3


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    print(DevCluster(_config(args)).paths.kubeconfig)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    handlers = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "kubeconfig": cmd_kubeconfig}
    try:
        return handlers[args.cmd](args)
    except (ConfigError, DevClusterError) as err:
        print(f"berth dev {args.cmd}: {err}", file=sys.stderr)
        return 2
