"""The `berth` command: each installed component contributes its sub-commands.

A component registers a function taking argv in the `berth.commands` entry-point group
of its own pyproject.toml (berth-operator: `operator`; berth-dev: `dev`; berth-bench:
`bench`). The operator image installs berth-operator alone, so there `berth` knows only
`operator`, and nothing here imports the dev cluster, the benchmarks or PyTorch. A
sub-command's module is imported only when it is called, so `berth --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points

GROUP = "berth.commands"

# one line of help per known sub-command; a component's own command not listed here
# still works (its help line says which package it came from)
HELP: dict[str, str] = {
    "operator": "run the operator: berth operator run | version",
    "dev": "local cluster: up | down | status | kubeconfig",
    "bench": "benchmarks: berth bench runtime | operator | autoscale",
}


def commands() -> dict[str, EntryPoint]:
    """sub-command name -> its entry point, for every installed component."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def usage(found: Mapping[str, EntryPoint]) -> str:
    lines = ["usage: berth <command> [args...]", "", "commands:"]
    for name in sorted(found):
        dist = found[name].dist
        origin = f"(from {dist.name})" if dist is not None else ""
        lines.append(f"  {name:<10} {HELP.get(name, origin)}")
    missing = sorted(set(HELP) - set(found))
    if missing:
        lines += ["", f"not installed here: {', '.join(missing)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    found = commands()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(found))
        return 0
    if args[0] not in found:
        hint = " (its package is not installed here)" if args[0] in HELP else ""
        print(f"berth: unknown command {args[0]!r}{hint}\n\n{usage(found)}", file=sys.stderr)
        return 2
    func: Callable[[list[str]], int | None] = found[args[0]].load()
    return int(func(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
