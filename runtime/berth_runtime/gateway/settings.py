"""Gateway settings: one small dataclass read from BERTH_GATEWAY_<FIELD> (flags override)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

PREFIX = "BERTH_GATEWAY_"


class GatewaySettingsError(ValueError):
    pass


@dataclass(frozen=True)
class GatewaySettings:
    # Address to listen on (in a pod: 0.0.0.0).
    host: str = "127.0.0.1"
    # Port to listen on.
    port: int = 8080
    # Comma-separated namespaces to watch; empty: every namespace (cluster-wide RBAC).
    namespaces: str = ""
    # Namespace an unprefixed path resolves in; "*": any namespace whose name is unique.
    default_namespace: str = "default"
    # Seconds a request waits for a model scaling from zero. A model's ScalingPolicy
    # (scaleFromZero.holdDeadlineSeconds) overrides it, and the model's own
    # spec.autoscaling.holdDeadlineSeconds or annotation serving.berth.dev/hold-deadline-seconds
    # overrides both (routing.hold_limits).
    hold_seconds: float = 60.0
    # Requests held at once per model; more get 429 with Retry-After. A policy's
    # scaleFromZero.maxHeldRequests can lower it for its models, not raise it.
    hold_max_requests: int = 1000
    # Body bytes held at once per model (held bodies sit in memory); more get 429. A
    # policy's scaleFromZero.maxHeldBytes can lower it for its models, not raise it.
    hold_max_bytes: int = 64 * 1024 * 1024
    # Largest request body (bytes) read whole: OpenAI bodies (the model is in the JSON)
    # and held bodies; a larger one gets 413. Bodies forwarded at once stream unbounded.
    max_body_bytes: int = 16 * 1024 * 1024
    # Above this many ready endpoints a model balances by power of two choices.
    two_choices_above: int = 8
    # Seconds to open a connection to an endpoint (refused or slower: another endpoint).
    connect_timeout: float = 2.0
    # Seconds to wait for a model's response (covers long generations; 0: no limit).
    read_timeout: float = 600.0
    # Seconds a client's idle keep-alive connection stays open. Longer than the idle time of
    # common clients and load balancers (httpx 5 s, nginx 60 s, cloud LBs 60 s), so that a
    # client never sends a request on a connection the gateway is closing at that moment.
    client_keepalive_seconds: int = 120
    # Idle keep-alive connections kept per endpoint.
    keepalive_per_endpoint: int = 64
    # Retry-After (seconds) on 429 and on 503 after the hold deadline.
    retry_after_seconds: int = 5
    # Whether, while requests are held, the gateway GETs the readiness of the model's
    # starting pods itself (every 0.1 s) and sends them to the first that answers, before
    # Kubernetes marks it ready (Knative's activator does the same).
    probe_starting: bool = True
    # Whether the first held request patches the model's /scale (off: hold only).
    wake: bool = True
    # Static routes without Kubernetes, "name=host:port,name2=host:port" (namespace
    # `default`, always ready; no discovery, no wake-up): a gateway in front of
    # `berth-runtime serve` processes, and the benchmark's setup. Empty: discovery.
    static: str = ""
    # Log level.
    log_level: str = "info"
    # Seconds for a request head (request line and headers) to arrive, from the
    # connection's opening (a connection that sends nothing) or the request's first byte;
    # later: 408 and close (slowloris).
    head_timeout_seconds: float = 10.0
    # Bytes of a request head; more: 431 and close (httptools alone reads heads unbounded).
    max_head_bytes: int = 64 * 1024
    # Client connections (and requests) at once; more: 503 (uvicorn's limit_concurrency).
    max_connections: int = 10000
    # Requests at once in the whole gateway (held, reading or forwarding); more: 503 with
    # Retry-After. Far above what one gateway core forwards; a bound on what it keeps.
    budget_max_requests: int = 10000
    # Bytes held at once in the whole gateway: request bodies read whole (held ones
    # included) and buffered responses; more: 503 with Retry-After. Below the chart's
    # 1 GiB memory limit, with room for the process itself and its connections.
    budget_max_bytes: int = 512 * 1024 * 1024
    # Whether a front proxy the gateway trusts sets X-Forwarded-For/-Proto and Forwarded:
    # then the gateway appends the peer to X-Forwarded-For; off: client copies are dropped.
    trust_forwarded: bool = False

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]


def _convert(key: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise GatewaySettingsError(f"{key}={raw!r}: expected a {type(default).__name__}") from None
    return raw


def from_env(
    env: Mapping[str, str], overrides: Mapping[str, object] | None = None
) -> GatewaySettings:
    """Settings from BERTH_GATEWAY_* variables, then `overrides` (parsed flags)."""
    base = GatewaySettings()
    values: dict[str, object] = {}
    for f in fields(GatewaySettings):
        key = f"{PREFIX}{f.name.upper()}"
        if key in env:
            values[f.name] = _convert(key, env[key], getattr(base, f.name))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = replace(base, **values)  # type: ignore[arg-type]
    checks = {
        "hold_seconds": settings.hold_seconds > 0,
        "hold_max_requests": settings.hold_max_requests > 0,
        "hold_max_bytes": settings.hold_max_bytes > 0,
        "max_body_bytes": settings.max_body_bytes > 0,
        "connect_timeout": settings.connect_timeout > 0,
        "read_timeout": settings.read_timeout >= 0,
        "port": 0 <= settings.port < 65536,
        "two_choices_above": settings.two_choices_above >= 2,
        "head_timeout_seconds": settings.head_timeout_seconds > 0,
        "max_head_bytes": settings.max_head_bytes >= 1024,
        "max_connections": settings.max_connections > 0,
        "budget_max_requests": settings.budget_max_requests > 0,
        "budget_max_bytes": settings.budget_max_bytes > 0,
    }
    for name, ok in checks.items():
        if not ok:
            raise GatewaySettingsError(
                f"{PREFIX}{name.upper()}={getattr(settings, name)!r} is out of range"
            )
    if not settings.default_namespace:
        raise GatewaySettingsError(f"{PREFIX}DEFAULT_NAMESPACE must not be empty")
    return settings
