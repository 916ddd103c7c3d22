"""The routing table and the endpoint choice (pure: plain data in, plain data out).

The table is built from what the Kubernetes API says (ModelDeployments and the
EndpointSlices of their Services, reduced to the small dataclasses below by
`discovery.py`); nothing here does I/O, reads a clock or keeps state.

Addressing: a served name is unique only inside one namespace. A request names its
namespace with the path prefix `/ns/<namespace>/...`; a request without it resolves in
the gateway's default namespace only (`default`, setting `default_namespace`), so a
model created in another tenant's namespace can never take over an unprefixed name.
The default namespace `*` (opt-in) resolves an unprefixed name in any namespace when
exactly one namespace serves it, and refuses an ambiguous name naming the candidates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

ANY_NAMESPACE = "*"
HOLD_ANNOTATION = "serving.berth.dev/hold-deadline-seconds"
MAX_HOLD_SECONDS = 3600.0
# The operator labels a model's Services (the EndpointSlice controller copies the labels
# onto their slices): the model's name, and track=canary on the canary's Service.
MODEL_LABEL = "serving.berth.dev/model"
TRACK_LABEL = "serving.berth.dev/track"
STABLE, CANARY = "stable", "canary"
CANARY_SUFFIX = "-canary"  # the canary's Service is <name>-canary
PROMOTING = "Promoting"  # status.canary.phase while a promotion rolls out


@dataclass(frozen=True)
class Endpoint:
    """One address that serves a model: `host:port` of a pod."""

    address: str  # "10.0.0.7:8080"


@dataclass(frozen=True)
class ModelInfo:
    """What the gateway needs to know about one ModelDeployment."""

    namespace: str
    name: str  # metadata.name (its Service and EndpointSlices carry this name)
    served: str  # spec.model.name or metadata.name: what requests ask for
    replicas: int = 1  # spec.replicas (what /scale says now)
    min_replicas: int = 0  # spec.autoscaling.minReplicas (0 without autoscaling)
    # The hold at zero (None: the gateway's setting): the model's own deadline, else its
    # ScalingPolicy's as the operator publishes it (hold_limits() below).
    hold_seconds: float | None = None
    hold_max_requests: int | None = None  # the policy's cap (it only lowers the gateway's)
    hold_max_bytes: int | None = None
    canary_weight: int | None = None  # spec.canary.weight (percent); None: no canary


@dataclass(frozen=True)
class SliceEndpoint:
    address: str  # first address of the endpoint
    ready: bool
    terminating: bool = False


@dataclass(frozen=True)
class SliceInfo:
    """One EndpointSlice, reduced: its Service, its port and its endpoints."""

    namespace: str
    service: str  # label kubernetes.io/service-name
    port: int | None
    endpoints: tuple[SliceEndpoint, ...] = ()
    model: str = ""  # label serving.berth.dev/model
    track: str = ""  # label serving.berth.dev/track ("canary" on the canary's slices)


@dataclass(frozen=True)
class Route:
    """A model and its ready endpoints (sorted, so equal tables compare equal).

    `endpoints` holds every endpoint that may get a request now (empty: requests are held
    and the model is woken). With a canary, `stable` and `canary` are the two tracks'
    ready endpoints and `canary_percent` the effective share of the canary (see split()).
    """

    model: ModelInfo
    endpoints: tuple[Endpoint, ...] = ()
    stable: tuple[Endpoint, ...] = ()
    canary: tuple[Endpoint, ...] = ()
    canary_percent: float = 0.0
    # the stable Service's endpoints that are neither ready nor terminating: pods still
    # starting, which the gateway probes itself while it holds requests (see warmup.py)
    starting: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class Table:
    routes: Mapping[tuple[str, str], Route] = field(default_factory=dict)  # (ns, served)

    def models(self) -> list[Route]:
        return [self.routes[k] for k in sorted(self.routes)]


def _seconds(raw: object) -> float | None:
    """A hold deadline in (0, 3600] seconds, or None (absent or bad: the next level)."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(str(raw))
    except ValueError:
        return None  # a bad annotation falls through to the next level
    return value if 0 < value <= MAX_HOLD_SECONDS else None


def _positive(raw: object) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        return None
    return int(raw)


def hold_limits(
    spec_seconds: object, annotation: object, published: Mapping[str, object]
) -> tuple[float | None, int | None, int | None]:
    """(deadline, max requests, max bytes) of one model; None: the gateway's setting.

    The deadline: the model's spec.autoscaling.holdDeadlineSeconds, else its annotation
    HOLD_ANNOTATION, else what the operator published from the model's ScalingPolicy
    (status.autoscaling.hold.deadlineSeconds). The caps come from the policy only."""
    seconds = _seconds(spec_seconds)
    if seconds is None:
        seconds = _seconds(annotation)
    if seconds is None:
        seconds = _seconds(published.get("deadlineSeconds"))
    return seconds, _positive(published.get("maxRequests")), _positive(published.get("maxBytes"))


def model_info(md: Mapping[str, object]) -> ModelInfo:
    """A ModelDeployment body -> ModelInfo (missing fields take the API's defaults)."""
    meta = md.get("metadata") or {}
    spec = md.get("spec") or {}
    status = md.get("status") or {}
    assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
    model = spec.get("model") or {}
    scaling = spec.get("autoscaling") or {}
    annotations = meta.get("annotations") or {}
    assert isinstance(model, Mapping) and isinstance(scaling, Mapping)
    assert isinstance(annotations, Mapping)
    scaler = status.get("autoscaling") if isinstance(status, Mapping) else None
    published = scaler.get("hold") if isinstance(scaler, Mapping) else None
    hold, max_requests, max_bytes = hold_limits(
        scaling.get("holdDeadlineSeconds"),
        annotations.get(HOLD_ANNOTATION),
        published if isinstance(published, Mapping) else {},
    )
    name = str(meta.get("name", ""))
    canary = spec.get("canary") or {}
    assert isinstance(canary, Mapping)
    weight = int(str(canary.get("weight", 0))) if canary.get("model") else None
    assert isinstance(status, Mapping)
    promoted = status.get("canary") or {}
    assert isinstance(promoted, Mapping)
    if weight is None and promoted.get("phase") == PROMOTING:
        # promoted: the canary keeps its share until the stable version has rolled out
        weight = int(str(promoted.get("weight", 0)))
    return ModelInfo(
        namespace=str(meta.get("namespace", "")),
        name=name,
        served=str(model.get("name") or name),
        replicas=int(str(spec.get("replicas", 1))),
        min_replicas=int(str(scaling.get("minReplicas", 0))) if scaling else 0,
        hold_seconds=hold,
        hold_max_requests=max_requests,
        hold_max_bytes=max_bytes,
        canary_weight=None if weight is None else max(0, min(100, weight)),
    )


def slice_info(body: Mapping[str, object]) -> SliceInfo:
    """An EndpointSlice body -> SliceInfo (port: the one named http, else the first)."""
    meta = body.get("metadata") or {}
    assert isinstance(meta, Mapping)
    labels = meta.get("labels") or {}
    assert isinstance(labels, Mapping)
    ports = [p for p in (body.get("ports") or []) if isinstance(p, Mapping)]  # type: ignore[attr-defined]
    port = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else None)
    eps = []
    for ep in body.get("endpoints") or []:  # type: ignore[attr-defined]
        addresses = ep.get("addresses") or []
        if not addresses:
            continue
        cond = ep.get("conditions") or {}
        eps.append(
            SliceEndpoint(
                address=str(addresses[0]),
                # unset ready means ready (the API's own rule)
                ready=cond.get("ready") is not False,
                terminating=cond.get("terminating") is True,
            )
        )
    return SliceInfo(
        namespace=str(meta.get("namespace", "")),
        service=str(labels.get("kubernetes.io/service-name", "")),
        port=int(port["port"]) if port and port.get("port") is not None else None,
        endpoints=tuple(eps),
        model=str(labels.get(MODEL_LABEL, "")),
        track=str(labels.get(TRACK_LABEL, "")),
    )


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def build_table(models: Iterable[ModelInfo], slices: Iterable[SliceInfo]) -> Table:
    """Routes for every model: ready, non-terminating endpoints of its Service's slices.

    Two ModelDeployments of one namespace that serve the same name: the older entry in
    `models` order wins (discovery passes them oldest first), so a newcomer cannot take
    over a name that already serves.
    """
    ready: dict[tuple[str, str], set[str]] = {}
    starting: dict[tuple[str, str], set[str]] = {}  # not ready, not terminating
    canaries: dict[tuple[str, str], set[str]] = {}  # (namespace, model) -> canary endpoints
    for s in slices:
        if s.port is None:
            continue
        for ep in s.endpoints:
            if not ep.ready and not ep.terminating:
                starting.setdefault((s.namespace, s.service), set()).add(
                    _host_port(ep.address, s.port)
                )
            elif ep.ready and not ep.terminating:
                address = _host_port(ep.address, s.port)
                ready.setdefault((s.namespace, s.service), set()).add(address)
                if s.track == CANARY and s.service == s.model + CANARY_SUFFIX:
                    canaries.setdefault((s.namespace, s.model), set()).add(address)
    routes: dict[tuple[str, str], Route] = {}
    for m in models:
        key = (m.namespace, m.served)
        if key in routes:
            continue
        eps = tuple(Endpoint(a) for a in sorted(ready.get((m.namespace, m.name), ())))
        rising = tuple(Endpoint(a) for a in sorted(starting.get((m.namespace, m.name), ())))
        if m.canary_weight is None:
            routes[key] = Route(model=m, endpoints=eps, starting=rising)
            continue
        canary = tuple(Endpoint(a) for a in sorted(canaries.get((m.namespace, m.name), ())))
        _, percent = split(m.canary_weight, bool(eps), bool(canary))
        routable = (eps if percent < 100 else ()) + (canary if percent > 0 else ())
        routes[key] = Route(m, routable, stable=eps, canary=canary, canary_percent=percent,
                            starting=rising)  # fmt: skip
    return Table(routes=routes)


def split(weight: int, stable_ready: bool, canary_ready: bool) -> tuple[float, float]:
    """(stable percent, canary percent) of requests now, for a canary of `weight` percent.

    A track without a ready endpoint counts 0, so its share goes to the other one instead
    of failing the route; neither ready (or a weight of 0 with the stable track down):
    (0, 0), and requests wait for a ready endpoint as at zero replicas.
    """
    weight = max(0, min(100, weight))
    want_canary = weight if canary_ready else 0
    want_stable = 100 - weight if stable_ready else 0
    total = want_stable + want_canary
    if total == 0:
        return 0.0, 0.0
    canary = 100.0 * want_canary / total
    return 100.0 - canary, canary


def choose_track(route: Route, rng: random.Random) -> tuple[str, tuple[Endpoint, ...]]:
    """The track one request goes to, drawn by the effective split, and its endpoints."""
    if not route.canary or route.canary_percent <= 0:
        return STABLE, route.stable if route.canary else route.endpoints
    if route.canary_percent >= 100 or rng.random() * 100 < route.canary_percent:
        return CANARY, route.canary
    return STABLE, route.stable


def static_table(spec: str, namespace: str = "default") -> Table:
    """ "name=host:port,name2=host:port" -> a table (always ready; a name given several
    times gets several endpoints). "name=" alone: a model at zero with no endpoint (its
    requests are held until the hold deadline: the gateway's own tests of holds)."""
    models: dict[str, ModelInfo] = {}
    slices = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, address = part.partition("=")
        if sep and name and not address:
            models.setdefault(name, ModelInfo(namespace, name, name, replicas=0))
            continue
        host, colon, port = address.rpartition(":")
        if not (sep and colon and name and host and port.isdigit()):
            raise ValueError(f"static route {part!r}: expected name=host:port")
        models.setdefault(name, ModelInfo(namespace, name, name))
        slices.append(
            SliceInfo(namespace, name, int(port), (SliceEndpoint(host.strip("[]"), True),))
        )
    return build_table(models.values(), slices)


@dataclass(frozen=True)
class Found:
    route: Route


@dataclass(frozen=True)
class NotFound:
    message: str


def resolve(
    table: Table, served: str, namespace: str | None, default_namespace: str
) -> Found | NotFound:
    """The route for a served name, with the namespace from the path (None: unprefixed)."""
    if namespace is not None:
        route = table.routes.get((namespace, served))
        if route is None:
            return NotFound(f"model {served!r} is not served in namespace {namespace!r}")
        return Found(route)
    if default_namespace != ANY_NAMESPACE:
        route = table.routes.get((default_namespace, served))
        if route is None:
            return NotFound(
                f"model {served!r} is not served in namespace {default_namespace!r}; "
                "address another namespace as /ns/<namespace>/..."
            )
        return Found(route)
    hits = [r for (ns, name), r in table.routes.items() if name == served]
    if len(hits) == 1:
        return Found(hits[0])
    if not hits:
        return NotFound(f"model {served!r} is not served by this gateway")
    where = ", ".join(sorted(r.model.namespace for r in hits))
    return NotFound(
        f"model {served!r} is served in several namespaces ({where}); "
        "address one as /ns/<namespace>/..."
    )


def pick(
    endpoints: Sequence[Endpoint],
    inflight: Mapping[str, int],
    *,
    exclude: frozenset[str] = frozenset(),
    two_choices_above: int = 8,
    rng: random.Random | None = None,
) -> Endpoint | None:
    """Least outstanding requests (the gateway's own count per endpoint).

    Up to `two_choices_above` endpoints: the least loaded of all (ties: a random one among
    them, so idle endpoints share the load). Above: power of two choices (two at random,
    the less loaded), which costs O(1) and avoids herding on one stale minimum.
    """
    rng = rng or random.Random()
    pool = [e for e in endpoints if e.address not in exclude]
    if not pool:
        return None
    if len(pool) > two_choices_above:
        a, b = rng.sample(pool, 2)
        return a if inflight.get(a.address, 0) <= inflight.get(b.address, 0) else b
    low = min(inflight.get(e.address, 0) for e in pool)
    best = [e for e in pool if inflight.get(e.address, 0) == low]
    return best[0] if len(best) == 1 else rng.choice(best)
