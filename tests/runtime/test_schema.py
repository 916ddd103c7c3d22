"""schemathesis against the runtime's own OpenAPI schema: no input produces a 5xx.

Runs the schemathesis CLI (its pytest plugin does not support this pytest yet).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from runtime_helpers import Server

pytestmark = pytest.mark.integration

ST = Path(sys.executable).parent / "schemathesis"


def test_no_server_errors(ts_server: Server, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            str(ST),
            "run",
            f"{ts_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout, proc.stdout[-3000:]
