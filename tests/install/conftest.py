"""Fixtures for the install tests: helm and kube-score (built from Go modules, cached)."""

from __future__ import annotations

from pathlib import Path

import pytest
from install_helpers import Helm


@pytest.fixture(scope="session")
def tools() -> Path:
    from berth_dev.chart import tools_dir

    return tools_dir()


@pytest.fixture(scope="session")
def helm(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tools / "helm", tmp_path_factory.mktemp("helm-home"))
