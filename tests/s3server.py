"""A real S3-compatible server for tests: versitygw over a temporary directory.

Built from the Go module proxy by hack/build-s3.sh (cached under ~/.cache/berth, keyed by
version) and started on a free port; `make test` builds it beforehand (target `s3`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ACCESS_KEY = "berth-test-access"
SECRET_KEY = "berth-test-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def env(self, secret_key: str | None = None) -> dict[str, str]:
        """The environment a runtime gets from a credentials Secret."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key if secret_key is None else secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except (
            ImportError
        ) as exc:  # fail loudly, never skip: the s3:// source is untested otherwise
            raise AssertionError(
                "boto3 is not installed in .venv: the s3:// tests need the 's3' extra "
                "(uv sync --locked --extra s3)"
            ) from exc
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip

    def upload_dir(self, bucket: str, prefix: str, src: Path) -> None:
        client = self.client()
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(src)}")


def binary() -> str:
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "build-s3.sh")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"hack/build-s3.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_server(root: Path, host: str = "127.0.0.1") -> Iterator[S3]:
    """versitygw serving `root` (data and metadata dirs inside it) with one root user."""
    exe = binary()
    data, meta = root / "data", root / "meta"
    data.mkdir(parents=True, exist_ok=True)
    meta.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (root / "versitygw.log").open("wb")
    proc = subprocess.Popen(
        [exe, "--access", ACCESS_KEY, "--secret", SECRET_KEY, "--region", REGION,
         "--port", f"{host}:{port}", "posix", "--sidecar", str(meta), str(data)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"versitygw exited: {(root / 'versitygw.log').read_text(errors='replace')}"
                )
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("versitygw did not listen within 30 s") from None
                time.sleep(0.1)
        yield S3(endpoint=f"http://{host}:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
