"""The servers under test: where their virtualenvs live and how each one is started.

Peer versions are pinned in one place, `bench/peers/requirements/<peer>.txt`. Each peer
gets its own virtualenv (their dependencies conflict), cached outside the repository in
`~/.cache/berth/bench-venvs/<peer>-<version>-<hash of the requirements>` and built with
`uv venv` + `uv pip install`, so a re-run is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from berth_bench.models import Model

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
PEERS_DIR = BENCH / "peers"
VENVS = Path.home() / ".cache" / "berth" / "bench-venvs"
MAIN_PY = REPO / ".venv" / "bin" / "python"


class PeerUnavailable(RuntimeError):
    """The peer cannot be installed or started here; the message says exactly why."""


@dataclass(frozen=True)
class Server:
    name: str
    package: str  # the distribution whose version names the server
    requirements: str | None  # bench/peers/requirements/<file>; None: Berth's own .venv
    batching: str  # how it batches, stated in the output

    def requirements_path(self) -> Path | None:
        return PEERS_DIR / "requirements" / self.requirements if self.requirements else None

    def pinned_version(self) -> str:
        req = self.requirements_path()
        if req is None:
            return "repo"
        for line in req.read_text().splitlines():
            name, _, ver = line.partition("==")
            if name.split("[")[0].strip() == self.package:
                return ver.strip()
        return "unpinned"

    def venv(self) -> Path:
        req = self.requirements_path()
        if req is None:
            return REPO / ".venv"
        digest = hashlib.sha256(req.read_bytes()).hexdigest()[:8]
        return VENVS / f"{self.name}-{self.pinned_version()}-{digest}"

    def python(self) -> Path:
        return self.venv() / "bin" / "python"


SERVERS: dict[str, Server] = {
    "berth": Server("berth", "berth", None, "dynamic batcher (--max-batch-size, --max-delay-ms)"),
    "kserve": Server(
        "kserve",
        "kserve",
        "kserve.txt",
        "none in the Python server (KServe batches in its Go agent sidecar)",
    ),
    "litserve": Server(
        "litserve", "litserve", "litserve.txt", "LitAPI max_batch_size / batch_timeout"
    ),
    "torchserve": Server(
        "torchserve", "torchserve", "torchserve.txt", "frontend batchSize / maxBatchDelay"
    ),
    "rayserve": Server(
        "rayserve", "ray", "rayserve.txt", "@serve.batch(max_batch_size, batch_wait_timeout_s)"
    ),
    "uvicorn-hello": Server("uvicorn-hello", "uvicorn", None, "n/a (HTTP floor)"),
}
PEERS = ("kserve", "litserve", "torchserve", "rayserve")


def find_uv() -> str | None:
    """The `uv` that `make` uses: the one on PATH, else the one `make` installs with
    `pip install --user` (~/.local/bin/uv, not on a plain login shell's PATH), else the one
    in this venv. The same lookup as the Makefile's UV variable."""
    found = shutil.which("uv")
    if found:
        return found
    for candidate in (Path.home() / ".local" / "bin" / "uv", Path(sys.executable).with_name("uv")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_venv(server: Server) -> Path:
    """Create the server's cached virtualenv if missing; return its python."""
    py = server.python()
    if py.exists() and (server.venv() / ".bench-ok").exists():
        return py
    req = server.requirements_path()
    if req is None:
        if not py.exists():
            raise PeerUnavailable(f"{py} missing: run `make venv` first")
        return py
    uv = find_uv()
    if uv is None:
        raise PeerUnavailable(
            "`uv` not found on PATH nor in ~/.local/bin (needed to build peer virtualenvs; "
            "`make venv` installs it)"
        )
    venv = server.venv()
    for cmd in (
        [
            uv,
            "venv",
            "-q",
            "--clear",  # a half-built venv of an interrupted run (no .bench-ok) is rebuilt
            "--python",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            str(venv),
        ],
        [uv, "pip", "install", "-q", "--python", str(py), "-r", str(req)],
    ):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise PeerUnavailable(
                f"`{' '.join(cmd[:3])} ...` failed: {(res.stderr or res.stdout).strip()[-1500:]}"
            )
    (venv / ".bench-ok").write_text(req.read_text())
    return py


def versions(server: Server) -> dict[str, str]:
    """Installed versions of the server's package, torch, and the Python."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for p in {[server.package, 'torch', 'numpy', 'sentence-transformers', 'uvicorn', 'fastapi']!r}:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        res = subprocess.run(
            [str(server.python()), "-c", code], capture_output=True, text=True, timeout=60
        )
        out: dict[str, str] = json.loads(res.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    if server.name == "torchserve":
        java = subprocess.run(["java", "-version"], capture_output=True, text=True)
        out["java"] = (java.stderr.splitlines() or ["?"])[0]
    return out


@dataclass(frozen=True)
class Launch:
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    url_path: str  # where the peer-style JSON request goes


def base_env(
    model: Model,
    name: str,
    port: int,
    threads: int,
    device: str,
    max_batch: int,
    max_delay_ms: float,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env.update(
        BENCH_MODEL_KIND=model.kind,
        BENCH_MODEL_PATH=str(model.path),
        BENCH_NAME=name,
        BENCH_PORT=str(port),
        BENCH_THREADS=str(threads),
        BENCH_DEVICE=device,
        BENCH_MAX_BATCH=str(max_batch),
        BENCH_MAX_DELAY_MS=str(max_delay_ms),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        RAY_USAGE_STATS_ENABLED="0",
        # Ray's raylet gives its agents 30 s by default, too little on one busy core.
        RAY_agent_register_timeout_ms="300000",
    )
    return env


def launch(
    server: Server,
    model: Model,
    *,
    name: str,
    port: int,
    threads: int,
    device: str,
    max_batch: int,
    max_delay_ms: float,
    n_cpus: int,
    workdir: Path,
) -> Launch:
    """The command that starts `server` serving `model` on 127.0.0.1:`port`."""
    env = base_env(model, name, port, threads, device, max_batch, max_delay_ms)
    py = str(server.python())
    env["PATH"] = f"{server.venv() / 'bin'}:{env.get('PATH', '')}"
    if server.name == "berth":
        exe = REPO / ".venv" / "bin" / "berth-runtime"
        if not exe.exists():
            raise PeerUnavailable(f"{exe} missing")
        cmd = [
            str(exe),
            "serve",
            "--model-uri",
            model.path.as_uri(),
            "--format",
            model.format,
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch),
            "--max-delay-ms",
            f"{max_delay_ms:g}",
            "--threads",
            str(threads),
        ]
        if device != "cpu":
            cmd += ["--device", device]
        return Launch(cmd, env, REPO, f"/v1/models/{name}:predict")
    if server.name == "uvicorn-hello":
        cmd = [
            py,
            "-m",
            "uvicorn",
            "hello_asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        return Launch(cmd, env, PEERS_DIR, "/hello")
    if server.name == "kserve":
        return Launch(
            [py, str(PEERS_DIR / "kserve_server.py")], env, workdir, f"/v1/models/{name}:predict"
        )
    if server.name == "litserve":
        return Launch([py, str(PEERS_DIR / "litserve_server.py")], env, workdir, "/predict")
    if server.name == "rayserve":
        env["BENCH_RAY_CPUS"] = str(n_cpus)
        return Launch([py, str(PEERS_DIR / "rayserve_app.py")], env, workdir, "/predict")
    if server.name == "torchserve":
        return _torchserve(server, env, name, port, workdir, max_batch, max_delay_ms)
    raise PeerUnavailable(f"unknown server {server.name}")


def _torchserve(
    server: Server,
    env: dict[str, str],
    name: str,
    port: int,
    workdir: Path,
    max_batch: int,
    max_delay_ms: float,
) -> Launch:
    if shutil.which("java", path=env["PATH"]) is None:
        raise PeerUnavailable(
            "TorchServe needs Java 11+: no `java` on PATH (apt-get install openjdk-17-jre-headless)"
        )
    bin_dir = server.venv() / "bin"
    store = workdir / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [
            str(bin_dir / "torch-model-archiver"),
            "--model-name",
            name,
            "--version",
            "1.0",
            "--handler",
            str(PEERS_DIR / "torchserve_handler.py"),
            "--extra-files",
            str(PEERS_DIR / "common.py"),
            "--export-path",
            str(store),
            "--force",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if res.returncode != 0:
        raise PeerUnavailable(f"torch-model-archiver failed: {res.stderr.strip()[-1500:]}")
    models = {
        name: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": max_batch,
                "maxBatchDelay": round(max_delay_ms),
                "responseTimeout": 120,
            }
        }
    }
    cfg = workdir / "config.properties"
    cfg.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{port}",
                f"management_address=http://127.0.0.1:{port + 1}",
                f"metrics_address=http://127.0.0.1:{port + 2}",
                f"model_store={store}",
                f"load_models={name}.mar",
                f"models={json.dumps(models)}",
                "default_workers_per_model=1",
                "disable_token_authorization=true",
                "enable_envvars_config=true",
                "async_logging=true",  # TorchServe's performance guide
                "job_queue_size=1000",
                "install_py_dep_per_model=false",
                "disable_system_metrics=true",
                "",
            ]
        )
    )
    env["LOG_LOCATION"] = str(workdir / "logs")
    env["METRICS_LOCATION"] = str(workdir / "logs")
    cmd = [
        str(bin_dir / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--model-store",
        str(store),
        "--ts-config",
        str(cfg),
    ]
    return Launch(cmd, env, workdir, f"/predictions/{name}")
