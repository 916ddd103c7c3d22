"""``berth-runtime serve``: parse flags over ``BERTH_*`` variables, refuse unsafe setups, serve."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

from berth_runtime.errors import ModelLoadError
from berth_runtime.safety import force_weights_only
from berth_runtime.settings import SettingsError, parse_settings

# Where the kubelet reads a container's termination message (the pod's default
# terminationMessagePath); the operator turns a refusal found there into a condition.
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_ENV = "BERTH_TERMINATION_LOG"
MAX_TERMINATION_BYTES = 4096  # the kubelet keeps no more


def refuse(exc: SettingsError, environ: Mapping[str, str]) -> int:
    """Refuse to start: one line on stderr and in the termination message; exit code 2.

    The line reads ``berth-runtime: start-up refused (<Reason>): <message>``; the
    operator (status.py) recognises that shape. The file is written only where it
    exists (the kubelet creates it), so a run outside Kubernetes writes nothing.
    """
    line = f"berth-runtime: start-up refused ({exc.reason}): {exc}"
    print(line, file=sys.stderr)
    path = environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG
    if os.path.isfile(path):
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(line.encode()[: MAX_TERMINATION_BYTES - 1].decode(errors="ignore") + "\n")
        except OSError as err:
            print(f"berth-runtime: termination message not written to {path}: {err}",
                  file=sys.stderr)  # fmt: skip
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gateway"]:  # the gateway: its own flags and settings (gateway/cli.py)
        from berth_runtime.gateway.cli import main as gateway_main

        return gateway_main(args[1:])
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        return refuse(exc, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        force_weights_only(os.environ)  # every torch.load in this process is weights-only
    except (ModelLoadError, OSError) as exc:
        print(f"berth-runtime: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from berth_runtime.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
