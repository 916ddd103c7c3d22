"""`berth bench <name>`: dispatch to one benchmark module."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "runtime": "berth_bench.runtime",
    "operator": "berth_bench.operator",
    "autoscale": "berth_bench.autoscale",
    "gateway": "berth_bench.gateway",
    "coldstart": "berth_bench.coldstart",
    "llm": "berth_bench.llm",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: berth bench {{{'|'.join(BENCHES)}}} [args...]", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHES[argv[0]]).main(argv[1:]) or 0)
