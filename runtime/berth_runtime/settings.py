"""Runtime settings: one pure dataclass, filled from flags over ``BERTH_*`` environment variables.

:func:`parse_settings` takes argv and an environment mapping and returns :class:`Settings`;
it never touches the process environment itself, so tests can call it directly.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from berth_runtime.errors import ModelLoadError
from berth_runtime.manifest import TensorSpec, inline_specs

FORMATS = ("torchscript", "torch-export", "safetensors", "sentence-transformers", "transformers")
DTYPES = ("float32", "bfloat16", "float16")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the flag and the variable."""

    reason = "InvalidSettings"
    """One CamelCase word for the refusal (the operator's condition reason for some)."""


class TokenError(SettingsError):
    """The bearer token is present but unusable: the runtime refuses to start (fail closed)."""

    reason = "InvalidAuthToken"


TOKEN_ENV = "BERTH_AUTH_TOKEN"
MAX_TOKEN_BYTES = 4096  # a token file larger than this is refused unread (a Secret holds 1 MiB)


def clean_token(raw: str, source: str) -> str:
    """The one rule for a token from the environment or a file: stripped of surrounding
    whitespace (a Secret made with `kubectl create secret --from-file` ends in a newline),
    and refused when nothing is left or when no client could send it in a header.

    Refusing is failing closed: an empty token must never mean "auth off".
    """
    token = raw.strip()
    if not token:
        raise TokenError(
            f"the bearer token from {source} is empty or only whitespace; the runtime will "
            "not serve without the token it was asked to require (put a token in the "
            "Secret, or remove spec.auth to serve without one)"
        )
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is not None:
        raise TokenError(
            f"the bearer token from {source} holds the character {bad!r} (U+{ord(bad):04X}); "
            "a token is printable ASCII, which is all a client can send in an "
            "Authorization header"
        )
    return token


def read_token_file(path: str) -> str:
    """The token in `path` (a mounted Secret), cleaned by :func:`clean_token`."""
    source = f"--auth-token-file (BERTH_AUTH_TOKEN_FILE) {path}"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise TokenError(f"cannot read the bearer token from {source}: {exc}") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise TokenError(f"the bearer token from {source} is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(f"the bearer token from {source} is not UTF-8 text") from None
    return clean_token(text, source)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know. Every field has a default except the model."""

    model_uri: str
    """Where the model lives: path, file://, pvc://, https://...#sha256=, s3://, gs://."""
    format: str
    """One of FORMATS."""
    name: str
    """The served model name, used in every route."""
    host: str = "0.0.0.0"
    """Listen address; all interfaces because the pod IP is what Services route to."""
    port: int = 8080
    """Listen port; KServe's and the chart's default."""
    max_batch_size: int = 32
    """Most rows in one forward pass; 32 suits most CNNs on one GPU."""
    max_delay_ms: float = 5.0
    """Longest a request waits for companions while the device is busy, in milliseconds."""
    dtype: str = "float32"
    """Floating point dtype of the weights: float32, bfloat16 or float16."""
    factory: str | None = None
    """module:function that builds the nn.Module for safetensors weights (never from berth.json)."""
    factory_allow: tuple[str, ...] = ()
    """Dotted module prefixes a factory may come from; empty allows none (operator setting)."""
    inputs: tuple[TensorSpec, ...] = ()
    """Inline input specs (--inputs JSON); take precedence over berth.json."""
    output_names: tuple[str, ...] = ()
    """Inline output names (--outputs JSON); take precedence over berth.json."""
    cache_dir: str = "/tmp/berth-cache"
    """Where downloads and unpacked archives go; pods mount an emptyDir at /var/cache/berth."""
    max_queue: int = 1024
    """Most requests waiting for the device before new ones get 429."""
    timeout_ms: float = 30_000.0
    """Per-request deadline from arrival to response, in milliseconds (504 after it)."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body accepted, in bytes (413 above it)."""
    max_rows: int = 2048
    """Most rows (batch entries) in one request on every protocol (413 above it)."""
    max_inflight_bytes: int = 512 * 1024 * 1024
    """Request body bytes held by all requests at once (429 with Retry-After above it)."""
    max_concurrent: int = 1024
    """Requests handled at once, probes and /metrics aside (503 with Retry-After above it)."""
    max_connections: int = 4096
    """Open connections (uvicorn's limit; it answers a plain 503 above it)."""
    body_timeout_s: float = 30.0
    """Longest a client may take to send a whole body (408 after it)."""
    header_timeout_s: float = 10.0
    """Longest a client may take to send a request's line and headers (408, then closed)."""
    max_download_bytes: int = 200 * 1024**3
    """Largest model download (HTTP, s3, gs), in bytes."""
    max_unpacked_bytes: int = 200 * 1024**3
    """Largest total uncompressed size of a model archive, in bytes."""
    max_archive_entries: int = 100_000
    """Most entries in a model archive."""
    max_compression_ratio: float = 200.0
    """Largest uncompressed/compressed size ratio of a model archive (zip bombs)."""
    auth_token: str | None = None
    """Bearer token required on every non-probe route when set (BERTH_AUTH_TOKEN, cleaned)."""
    auth_token_file: str | None = None
    """File holding the bearer token (a mounted Secret); read once, at start-up."""
    threads: int | None = None
    """torch intra-op threads; None picks from the CPU quota."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, or cuda[:N]."""
    grace_seconds: float = 25.0
    """Longest the drain may take after SIGTERM; below Kubernetes' 30 s default."""
    pvc_root: str = "/mnt/pvc"
    """Where pvc://<claim>/<path> is mounted: <pvc_root>/<claim>/<path>."""
    log_level: str = "info"
    """Python logging level name."""
    access_log: bool = False
    """uvicorn access log; off by default because it costs throughput."""
    max_model_len: int = 0
    """transformers format: longest prompt + generation in tokens; 0 takes the model config's."""
    kv_cache_tokens: int = 0
    """transformers format: KV-cache size in tokens; 0 fits --max-batch-size full contexts."""

    def resolved_token(self) -> str | None:
        """The bearer token from the setting or its file, cleaned; None when auth is off.

        TokenError when a token is present but empty or unusable (fail closed).
        """
        if self.auth_token is not None:
            return clean_token(self.auth_token, TOKEN_ENV)
        if self.auth_token_file is not None:
            return read_token_file(self.auth_token_file)
        return None


# flag, field, env var, type, help. Required fields have no default in Settings.
_OPTIONS: tuple[tuple[str, str, str, type, str], ...] = (
    ("--model-uri", "model_uri", "BERTH_MODEL_URI", str, "model location"),
    ("--format", "format", "BERTH_FORMAT", str, "model format: " + ", ".join(FORMATS)),
    ("--name", "name", "BERTH_MODEL_NAME", str, "served model name"),
    ("--host", "host", "BERTH_HOST", str, "listen address"),
    ("--port", "port", "BERTH_PORT", int, "listen port"),
    ("--max-batch-size", "max_batch_size", "BERTH_MAX_BATCH_SIZE", int, "rows per forward pass"),
    ("--max-delay-ms", "max_delay_ms", "BERTH_MAX_DELAY_MS", float, "batching delay"),
    ("--dtype", "dtype", "BERTH_DTYPE", str, "weights dtype: " + ", ".join(DTYPES)),
    ("--factory", "factory", "BERTH_FACTORY", str, "module:function for safetensors"),
    ("--factory-allow", "factory_allow", "BERTH_FACTORY_ALLOW", str, "allowed factory modules"),
    ("--inputs", "inputs", "BERTH_INPUTS", str, "inline input specs (JSON list)"),
    ("--outputs", "output_names", "BERTH_OUTPUTS", str, "inline output specs (JSON list)"),
    ("--cache-dir", "cache_dir", "BERTH_CACHE_DIR", str, "download and unpack cache"),
    ("--max-queue", "max_queue", "BERTH_MAX_QUEUE", int, "queued requests before 429"),
    ("--timeout-ms", "timeout_ms", "BERTH_TIMEOUT_MS", float, "per-request deadline"),
    ("--max-body-bytes", "max_body_bytes", "BERTH_MAX_BODY_BYTES", int, "body limit"),
    ("--max-rows", "max_rows", "BERTH_MAX_ROWS", int, "rows per request"),
    ("--max-inflight-bytes", "max_inflight_bytes", "BERTH_MAX_INFLIGHT_BYTES", int, "byte budget"),
    ("--max-concurrent", "max_concurrent", "BERTH_MAX_CONCURRENT", int, "requests at once"),
    ("--max-connections", "max_connections", "BERTH_MAX_CONNECTIONS", int, "open connections"),
    ("--body-timeout-s", "body_timeout_s", "BERTH_BODY_TIMEOUT_S", float, "body read limit"),
    ("--header-timeout-s", "header_timeout_s", "BERTH_HEADER_TIMEOUT_S", float, "head read limit"),
    ("--max-download-bytes", "max_download_bytes", "BERTH_MAX_DOWNLOAD_BYTES", int, "download cap"),
    ("--max-unpacked-bytes", "max_unpacked_bytes", "BERTH_MAX_UNPACKED_BYTES", int, "archive cap"),
    ("--max-archive-entries", "max_archive_entries", "BERTH_MAX_ARCHIVE_ENTRIES", int, "entries"),
    (
        "--max-compression-ratio",
        "max_compression_ratio",
        "BERTH_MAX_COMPRESSION_RATIO",
        float,
        "archive ratio cap",
    ),
    ("--auth-token-file", "auth_token_file", "BERTH_AUTH_TOKEN_FILE", str, "bearer token file"),
    ("--threads", "threads", "BERTH_THREADS", int, "torch intra-op threads"),
    ("--device", "device", "BERTH_DEVICE", str, "auto, cpu or cuda[:N]"),
    ("--grace-seconds", "grace_seconds", "BERTH_GRACE_SECONDS", float, "drain limit"),
    ("--pvc-root", "pvc_root", "BERTH_PVC_ROOT", str, "where pvc:// claims are mounted"),
    ("--log-level", "log_level", "BERTH_LOG_LEVEL", str, "logging level"),
    ("--max-model-len", "max_model_len", "BERTH_MAX_MODEL_LEN", int, "LLM context, tokens"),
    ("--kv-cache-tokens", "kv_cache_tokens", "BERTH_KV_CACHE_TOKENS", int, "LLM KV cache, tokens"),
)
_REQUIRED = ("model_uri", "format", "name")
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _convert(value: str, kind: type, flag: str, env: str) -> object:
    try:
        return kind(value)
    except ValueError:
        raise SettingsError(f"{flag} (or {env}) must be {kind.__name__}, got {value!r}") from None


def _structured(kwargs: dict[str, object]) -> None:
    """Turn the comma list and the JSON settings into their typed values, naming the flag."""
    allow = kwargs.get("factory_allow")
    if isinstance(allow, str):
        prefixes = tuple(p.strip() for p in allow.split(",") if p.strip())
        for p in prefixes:
            if not all(part.isidentifier() for part in p.split(".")):
                raise SettingsError(
                    f"--factory-allow (or BERTH_FACTORY_ALLOW) entries must be dotted module "
                    f"names, got {p!r}"
                )
        kwargs["factory_allow"] = prefixes
    raw_in, raw_out = kwargs.pop("inputs", None), kwargs.pop("output_names", None)
    try:
        specs, names = inline_specs(
            raw_in if isinstance(raw_in, str) else None,
            raw_out if isinstance(raw_out, str) else None,
        )
    except ModelLoadError as exc:
        raise SettingsError(f"{exc} (BERTH_INPUTS / BERTH_OUTPUTS)") from None
    if specs:
        kwargs["inputs"] = specs
    if names:
        kwargs["output_names"] = names


def build_parser() -> argparse.ArgumentParser:
    """The ``berth-runtime`` parser; every flag defaults to None so env can fill in."""
    parser = argparse.ArgumentParser(prog="berth-runtime", description="Berth inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve one model")
    for flag, dest, env, _kind, help_text in _OPTIONS:
        serve.add_argument(flag, dest=dest, default=None, help=f"{help_text} (env {env})")
    serve.add_argument(
        "--access-log",
        dest="access_log",
        action="store_true",
        default=None,
        help="log every request (env BERTH_ACCESS_LOG=1)",
    )
    return parser


def settings_from(values: Mapping[str, str | None], environ: Mapping[str, str]) -> Settings:
    """Merge flag values over environment variables, validate, and build Settings."""
    kwargs: dict[str, object] = {}
    for flag, dest, env, kind, _help in _OPTIONS:
        raw = values.get(dest)
        if raw is None:
            raw = environ.get(env) or None
        if raw is None:
            if dest in _REQUIRED:
                raise SettingsError(f"missing required setting {flag} (or environment {env})")
            continue
        kwargs[dest] = _convert(raw, kind, flag, env)
    _structured(kwargs)
    # Present means on: an empty value is refused, never taken for "auth off".
    if TOKEN_ENV in environ:
        if "auth_token_file" in kwargs:
            raise TokenError(
                f"both {TOKEN_ENV} and --auth-token-file (BERTH_AUTH_TOKEN_FILE) are set; set one"
            )
        kwargs["auth_token"] = clean_token(environ[TOKEN_ENV], TOKEN_ENV)
    elif isinstance(kwargs.get("auth_token_file"), str):
        kwargs["auth_token"] = read_token_file(str(kwargs["auth_token_file"]))
    access = values.get("access_log")
    if access is None:
        access_env = environ.get("BERTH_ACCESS_LOG", "")
        kwargs["access_log"] = access_env.lower() in ("1", "true", "yes")
    else:
        kwargs["access_log"] = bool(access)
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Reject values that can never work, naming the flag and what is allowed."""
    if s.format not in FORMATS:
        raise SettingsError(f"--format must be one of {', '.join(FORMATS)}, got {s.format!r}")
    if s.dtype not in DTYPES:
        raise SettingsError(f"--dtype must be one of {', '.join(DTYPES)}, got {s.dtype!r}")
    if not s.name or "/" in s.name or ":" in s.name:
        raise SettingsError(f"--name must be non-empty without '/' or ':', got {s.name!r}")
    checks = (
        ("--port", 0 <= s.port <= 65535),
        ("--max-batch-size", s.max_batch_size >= 1),
        ("--max-delay-ms", s.max_delay_ms >= 0),
        ("--max-queue", s.max_queue >= 1),
        ("--timeout-ms", s.timeout_ms > 0),
        ("--max-body-bytes", s.max_body_bytes >= 1024),
        ("--max-rows", s.max_rows >= 1),
        ("--max-inflight-bytes", s.max_inflight_bytes >= s.max_body_bytes),
        ("--max-concurrent", s.max_concurrent >= 1),
        ("--max-connections", s.max_connections >= 1),
        ("--body-timeout-s", s.body_timeout_s > 0),
        ("--header-timeout-s", s.header_timeout_s > 0),
        ("--max-download-bytes", s.max_download_bytes >= 1),
        ("--max-unpacked-bytes", s.max_unpacked_bytes >= 1),
        ("--max-archive-entries", s.max_archive_entries >= 1),
        ("--max-compression-ratio", s.max_compression_ratio >= 1),
        ("--grace-seconds", s.grace_seconds >= 0),
        ("--threads", s.threads is None or s.threads >= 1),
        ("--max-model-len", s.max_model_len >= 0),
        ("--kv-cache-tokens", s.kv_cache_tokens >= 0),
    )
    for flag, ok in checks:
        if not ok:
            hint = " (at least --max-body-bytes)" if flag == "--max-inflight-bytes" else ""
            raise SettingsError(f"{flag} is out of range{hint}")
    if s.factory is not None and ":" not in s.factory:
        raise SettingsError(f"--factory must look like module:function, got {s.factory!r}")
    if s.device != "auto" and s.device != "cpu" and not s.device.startswith("cuda"):
        raise SettingsError(f"--device must be auto, cpu or cuda[:N], got {s.device!r}")


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parse ``serve`` argv (without the program name) and the environment."""
    ns = build_parser().parse_args(list(argv))
    return settings_from(vars(ns), environ)
