"""The `berth` command: dev cluster, operator and benchmarks.

Each sub-command lives in its own module and is imported only when called, so
`berth --help` stays fast and `berth dev` never imports PyTorch.
"""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "dev": ("berth_dev.cli", "main", "local cluster: up | down | status | kubeconfig | agent"),
    "operator": ("berth_operator.main", "main", "run the operator: berth operator run"),
    "bench": ("berth_bench.cli", "main", "benchmarks: berth bench runtime | operator"),
}


def usage() -> str:
    lines = ["usage: berth <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"berth: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[args[0]]
    result = getattr(importlib.import_module(module), func)(args[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
