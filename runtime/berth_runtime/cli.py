"""``berth-runtime serve``: parse flags over ``BERTH_*`` variables, refuse unsafe setups, serve."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from berth_runtime.errors import ModelLoadError
from berth_runtime.safety import force_weights_only
from berth_runtime.settings import SettingsError, parse_settings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gateway"]:  # the gateway: its own flags and settings (gateway/cli.py)
        from berth_runtime.gateway.cli import main as gateway_main

        return gateway_main(args[1:])
    try:
        settings = parse_settings(args, os.environ)
    except SettingsError as exc:
        print(f"berth-runtime: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        force_weights_only(os.environ)  # every torch.load in this process is weights-only
        settings.resolved_token()
    except (ModelLoadError, SettingsError, OSError) as exc:
        print(f"berth-runtime: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from berth_runtime.server import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
