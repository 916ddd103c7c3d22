"""The workspace split: the operator package stays free of PyTorch, the dev cluster and
the benchmarks, and `berth` finds each component's sub-commands through entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "berth_dev", "berth_bench", "berth_runtime", "fastapi", "numpy")


@pytest.mark.unit
def test_operator_imports_nothing_heavy() -> None:
    # a fresh interpreter: what importing the whole operator (handlers, autoscaler, CLI,
    # leader election) pulls in, exactly as in the operator image
    code = (
        "import sys, json\n"
        "import berth_operator.cli, berth_operator.main, berth_operator.handlers\n"
        "import berth_operator.leader, berth_operator.autoscaling.loop\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)


@pytest.mark.unit
def test_operator_distribution_declares_no_heavy_dependency() -> None:
    meta = tomllib.loads((REPO / "operator" / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in meta["dependencies"]}
    # promql-parser: one compiled module, no dependencies (tenant promql scoping)
    assert names == {"kopf", "lightkube", "httpx", "pyyaml", "promql-parser"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("member", "command"),
    [
        ("operator", "operator"),  # the operator image's only sub-command
        ("devcluster", "dev"),  # berth dev comes from berth-dev, never from the operator
        ("bench", "bench"),  # berth bench comes from berth-bench
    ],
)
def test_each_component_registers_its_subcommand(member: str, command: str) -> None:
    meta = tomllib.loads((REPO / member / "pyproject.toml").read_text())["project"]
    assert command in meta["entry-points"]["berth.commands"]


@pytest.mark.unit
def test_berth_lists_installed_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "berth_operator.cli", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for command in ("operator", "dev", "bench"):
        assert f"\n  {command} " in out


@pytest.mark.unit
def test_unknown_subcommand_is_refused_with_the_list() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "berth_operator.cli", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown command 'nope'" in proc.stderr and "operator" in proc.stderr


@pytest.mark.unit
def test_operator_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "berth_operator.cli", "operator", "version"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "berth-operator 0.1.0"
