"""The gateway's pure parts: paths, the routing table, name resolution, endpoint choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from berth_runtime.gateway import paths, routing
from berth_runtime.gateway.routing import Endpoint, ModelInfo, SliceEndpoint, SliceInfo

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("path", "kind", "protocol", "namespace", "model", "upstream"),
    [
        # OIP v2: the name is the third segment
        ("/v2/models/cnn/infer", "model", "v2", None, "cnn", "/v2/models/cnn/infer"),
        # v2 model metadata, versions included
        (
            "/v2/models/cnn/versions/1/infer",
            "model",
            "v2",
            None,
            "cnn",
            "/v2/models/cnn/versions/1/infer",
        ),
        # KServe v1: the name ends at the colon
        ("/v1/models/cnn:predict", "model", "v1", None, "cnn", "/v1/models/cnn:predict"),
        # the namespace prefix is removed before forwarding
        ("/ns/team-a/v2/models/cnn/ready", "model", "v2", "team-a", "cnn", "/v2/models/cnn/ready"),
        # OpenAI: the model is in the body
        ("/v1/embeddings", "body", "openai", None, None, "/v1/embeddings"),
        ("/ns/a/v1/chat/completions", "body", "openai", "a", None, "/v1/chat/completions"),
        ("/v1/completions", "body", "openai", None, None, "/v1/completions"),
        # the list is the gateway's own answer
        ("/v1/models", "list", "openai", None, None, "/v1/models"),
        # the gateway's health and metrics are never forwarded
        ("/metrics", "own", "own", None, None, "/metrics"),
        ("/v2/health/ready", "own", "own", None, None, "/v2/health/ready"),
        # unknown paths keep the protocol of their prefix (for the error's shape)
        ("/v2/repository/index", "unknown", "v2", None, None, "/v2/repository/index"),
        ("/v1/files", "unknown", "openai", None, None, "/v1/files"),
        # an empty namespace prefix is no route
        ("/ns//v2/models/x/infer", "unknown", "other", None, None, "/ns//v2/models/x/infer"),
        # an empty model name is no route
        ("/v2/models//infer", "unknown", "v2", None, None, "/v2/models//infer"),
    ],
)
def test_parse(path: str, kind: str, protocol: str, namespace: str | None, model: str | None,
               upstream: str) -> None:  # fmt: skip
    t = paths.parse(path)
    assert (t.kind, t.protocol, t.namespace, t.model, t.upstream_path) == (
        kind, protocol, namespace, model, upstream)  # fmt: skip


def md(ns: str, name: str, served: str | None = None, **spec: object) -> dict[str, object]:
    model: dict[str, object] = {"uri": "file:///m", "format": "torchscript"}
    if served:
        model["name"] = served
    return {"metadata": {"namespace": ns, "name": name, "annotations": spec.pop("ann", {})},
            "spec": {"model": model, **spec}}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "want"),
    [
        # served name defaults to metadata.name; replicas default 1
        (md("a", "m"), ModelInfo("a", "m", "m", 1, 0, None)),
        # spec.model.name wins; minReplicas read from autoscaling
        (
            md("a", "m", "bert", replicas=0, autoscaling={"minReplicas": 2}),
            ModelInfo("a", "m", "bert", 0, 2, None),
        ),
        # the hold deadline annotation
        (md("a", "m", ann={routing.HOLD_ANNOTATION: "5"}), ModelInfo("a", "m", "m", 1, 0, 5.0)),
        # a garbage or out-of-range annotation keeps the default
        (md("a", "m", ann={routing.HOLD_ANNOTATION: "soon"}), ModelInfo("a", "m", "m", 1, 0, None)),
        (md("a", "m", ann={routing.HOLD_ANNOTATION: "-1"}), ModelInfo("a", "m", "m", 1, 0, None)),
    ],
)
def test_model_info(body: dict[str, object], want: ModelInfo) -> None:
    assert routing.model_info(body) == want


def test_slice_info_reads_conditions_and_named_port() -> None:
    body = {
        "metadata": {"namespace": "a", "name": "m-abc",
                     "labels": {"kubernetes.io/service-name": "m"}},
        "ports": [{"name": "metrics", "port": 9000}, {"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "terminating": True}},
            {"addresses": ["10.0.0.3"], "conditions": {}},  # unset ready means ready
            {"addresses": [], "conditions": {"ready": True}},  # no address: skipped
        ],
    }  # fmt: skip
    assert routing.slice_info(body) == SliceInfo(
        "a", "m", 8080,
        (SliceEndpoint("10.0.0.1", True), SliceEndpoint("10.0.0.2", False, True),
         SliceEndpoint("10.0.0.3", True)),
    )  # fmt: skip


A = ModelInfo("a", "m", "m")
B = ModelInfo("b", "m", "m")


@pytest.mark.parametrize(
    ("models", "slices", "want"),
    [
        # ready endpoints only, from every slice of the Service, sorted
        (
            [A],
            [
                SliceInfo(
                    "a",
                    "m",
                    8080,
                    (SliceEndpoint("10.0.0.2", True), SliceEndpoint("10.0.0.3", False)),
                ),
                SliceInfo("a", "m", 8080, (SliceEndpoint("10.0.0.1", True),)),
            ],
            {("a", "m"): ("10.0.0.1:8080", "10.0.0.2:8080")},
        ),
        # a terminating endpoint gets nothing new, even while still "ready"
        (
            [A],
            [SliceInfo("a", "m", 8080, (SliceEndpoint("10.0.0.1", True, True),))],
            {("a", "m"): ()},
        ),
        # another namespace's Service of the same name is not ours
        ([A], [SliceInfo("b", "m", 8080, (SliceEndpoint("10.0.0.1", True),))], {("a", "m"): ()}),
        # a slice without a port is useless
        ([A], [SliceInfo("a", "m", None, (SliceEndpoint("10.0.0.1", True),))], {("a", "m"): ()}),
        # IPv6 addresses get brackets
        (
            [A],
            [SliceInfo("a", "m", 8080, (SliceEndpoint("fd00::1", True),))],
            {("a", "m"): ("[fd00::1]:8080",)},
        ),
        # two models of one namespace serving one name: the first (oldest) keeps it
        (
            [ModelInfo("a", "old", "x"), ModelInfo("a", "new", "x")],
            [SliceInfo("a", "new", 8080, (SliceEndpoint("10.0.0.9", True),))],
            {("a", "x"): ()},
        ),
    ],
)
def test_build_table(models: list[ModelInfo], slices: list[SliceInfo],
                     want: dict[tuple[str, str], tuple[str, ...]]) -> None:  # fmt: skip
    table = routing.build_table(models, slices)
    assert {k: tuple(e.address for e in r.endpoints) for k, r in table.routes.items()} == want


TABLE = routing.build_table([A, B, ModelInfo("default", "d", "only-here")], [])


@pytest.mark.parametrize(
    ("served", "ns", "default_ns", "want"),
    [
        # the prefix names the namespace
        ("m", "b", "default", ("b", "m")),
        # unprefixed: the default namespace only, never another tenant's model
        ("m", None, "default", "not served in namespace 'default'"),
        ("only-here", None, "default", ("default", "d")),
        # "*": any namespace, when the name is unique
        ("only-here", None, "*", ("default", "d")),
        # "*" and ambiguous: refused, naming the candidates
        ("m", None, "*", "several namespaces (a, b)"),
        # unknown
        ("nope", "a", "default", "not served in namespace 'a'"),
        ("nope", None, "*", "not served by this gateway"),
    ],
)
def test_resolve(served: str, ns: str | None, default_ns: str, want: object) -> None:
    got = routing.resolve(TABLE, served, ns, default_ns)
    if isinstance(want, tuple):
        assert isinstance(got, routing.Found)
        assert (got.route.model.namespace, got.route.model.name) == want
    else:
        assert isinstance(got, routing.NotFound)
        assert str(want) in got.message


EPS = [Endpoint(f"10.0.0.{i}:8080") for i in range(1, 4)]


@pytest.mark.parametrize(
    ("inflight", "exclude", "want"),
    [
        # least outstanding wins
        (
            {"10.0.0.1:8080": 3, "10.0.0.2:8080": 1, "10.0.0.3:8080": 2},
            frozenset(),
            "10.0.0.2:8080",
        ),
        # an endpoint never used counts as 0
        ({"10.0.0.1:8080": 1, "10.0.0.2:8080": 1}, frozenset(), "10.0.0.3:8080"),
        # the retry excludes the endpoint that refused
        ({"10.0.0.2:8080": 0}, frozenset({"10.0.0.1:8080", "10.0.0.3:8080"}), "10.0.0.2:8080"),
        # nothing left
        ({}, frozenset(e.address for e in EPS), None),
    ],
)
def test_pick_least_outstanding(inflight: dict[str, int], exclude: frozenset[str],
                                want: str | None) -> None:  # fmt: skip
    got = routing.pick(EPS, inflight, exclude=exclude, rng=random.Random(1))
    assert (got.address if got else None) == want


def test_pick_spreads_ties_and_uses_two_choices_above_n() -> None:
    rng = random.Random(7)
    # ties: every idle endpoint gets a share
    counts = Counter(routing.pick(EPS, {}, rng=rng).address for _ in range(300))  # type: ignore[union-attr]
    assert len(counts) == 3 and min(counts.values()) > 60
    # above N: two random choices, never the most loaded of the two
    many = [Endpoint(f"10.1.0.{i}:80") for i in range(20)]
    load = {e.address: i for i, e in enumerate(many)}
    picks = [routing.pick(many, load, two_choices_above=8, rng=rng) for _ in range(2000)]
    assert all(p is not None for p in picks)
    assert Counter(p.address for p in picks if p)[many[-1].address] == 0  # the worst never wins


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        # two routes, each with its one endpoint, in namespace default
        (
            "a=127.0.0.1:9001, b=10.0.0.2:80",
            {("default", "a"): ("127.0.0.1:9001",), ("default", "b"): ("10.0.0.2:80",)},
        ),
        # a name given twice: two endpoints of one model
        ("a=h:1,a=h:2", {("default", "a"): ("h:1", "h:2")}),
        # empty entries are ignored
        ("a=h:1,,", {("default", "a"): ("h:1",)}),
    ],
)
def test_static_table(spec: str, want: dict[tuple[str, str], tuple[str, ...]]) -> None:
    table = routing.static_table(spec)
    assert {k: tuple(e.address for e in r.endpoints) for k, r in table.routes.items()} == want


@pytest.mark.parametrize("spec", ["a", "a=host", "=h:1", "a=h:port"])
def test_static_table_refuses_malformed_routes(spec: str) -> None:
    with pytest.raises(ValueError, match="expected name=host:port"):
        routing.static_table(spec)


# --- the canary split -----------------------------------------------------------------


def _canary_md(weight: int) -> dict[str, object]:
    return {
        "metadata": {"namespace": "ns", "name": "m"},
        "spec": {
            "model": {"uri": "file:///a", "format": "torchscript", "name": "svc"},
            "canary": {"model": {"uri": "file:///b", "format": "torchscript", "name": "svc"},
                       "weight": weight},
        },
    }  # fmt: skip


def _slices(stable: int, canary: int) -> list[SliceInfo]:
    s = SliceInfo("ns", "m", 8080, tuple(SliceEndpoint(f"10.0.0.{i}", True) for i in range(stable)),
                  model="m")  # fmt: skip
    c = SliceInfo("ns", "m-canary", 8080,
                  tuple(SliceEndpoint(f"10.0.1.{i}", True) for i in range(canary)),
                  model="m", track="canary")  # fmt: skip
    return [s, c]


def test_model_info_reads_the_canary_weight() -> None:
    assert routing.model_info(_canary_md(10)).canary_weight == 10
    plain = _canary_md(10)
    del plain["spec"]["canary"]  # type: ignore[attr-defined]
    assert routing.model_info(plain).canary_weight is None


def test_slice_info_reads_model_and_track_labels() -> None:
    body = {"metadata": {"namespace": "ns", "labels": {
        "kubernetes.io/service-name": "m-canary", "serving.berth.dev/model": "m",
        "serving.berth.dev/track": "canary"}},
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.0.1.1"], "conditions": {"ready": True}}]}  # fmt: skip
    info = routing.slice_info(body)
    assert (info.service, info.model, info.track) == ("m-canary", "m", "canary")


@pytest.mark.parametrize(
    ("weight", "stable", "canary", "want"),
    [
        (10, True, True, (90.0, 10.0)),
        (50, True, True, (50.0, 50.0)),
        (100, True, True, (0.0, 100.0)),
        (0, True, True, (100.0, 0.0)),
        (10, True, False, (100.0, 0.0)),  # the canary has no ready endpoint: it counts 0
        (10, False, True, (0.0, 100.0)),  # the stable one has none: the canary takes it all
        (0, False, True, (0.0, 0.0)),  # weight 0 never sends to the canary: requests wait
        (10, False, False, (0.0, 0.0)),
    ],
)
def test_split_counts_a_track_without_endpoints_as_zero(
    weight: int, stable: bool, canary: bool, want: tuple[float, float]
) -> None:
    assert routing.split(weight, stable, canary) == want


def test_table_holds_both_tracks_of_a_model() -> None:
    table = routing.build_table([routing.model_info(_canary_md(10))], _slices(2, 1))
    route = table.routes[("ns", "svc")]
    assert [e.address for e in route.stable] == ["10.0.0.0:8080", "10.0.0.1:8080"]
    assert [e.address for e in route.canary] == ["10.0.1.0:8080"]
    assert len(route.endpoints) == 3 and route.canary_percent == 10.0


def test_canary_without_endpoints_gets_no_traffic_and_the_route_still_serves() -> None:
    table = routing.build_table([routing.model_info(_canary_md(50))], _slices(2, 0))
    route = table.routes[("ns", "svc")]
    assert route.canary_percent == 0.0 and len(route.endpoints) == 2
    rng = random.Random(7)
    assert {routing.choose_track(route, rng)[0] for _ in range(200)} == {"stable"}


def test_no_ready_endpoint_in_either_track_leaves_the_route_empty_for_the_hold() -> None:
    table = routing.build_table([routing.model_info(_canary_md(50))], _slices(0, 0))
    assert table.routes[("ns", "svc")].endpoints == ()


def test_a_slice_of_another_model_named_like_a_canary_is_not_a_canary() -> None:
    # the stable Service of a ModelDeployment named "m-canary" (no track label)
    other = SliceInfo("ns", "m-canary", 8080, (SliceEndpoint("10.0.9.9", True),), model="m-canary")
    table = routing.build_table([routing.model_info(_canary_md(50))], [_slices(1, 0)[0], other])
    assert table.routes[("ns", "svc")].canary == ()


@pytest.mark.parametrize("weight", [10, 50])
def test_choose_track_follows_the_weight(weight: int) -> None:
    table = routing.build_table([routing.model_info(_canary_md(weight))], _slices(2, 2))
    route = table.routes[("ns", "svc")]
    rng = random.Random(42)
    n = 20_000
    picks = Counter(routing.choose_track(route, rng)[0] for _ in range(n))
    assert abs(100 * picks["canary"] / n - weight) < 1.0, picks
    track, eps = routing.choose_track(route, random.Random(1))
    assert eps == (route.canary if track == "canary" else route.stable)


def test_choose_track_without_a_canary_is_the_plain_route() -> None:
    route = routing.static_table("cnn=10.0.0.1:8080").routes[("default", "cnn")]
    assert routing.choose_track(route, random.Random(0)) == ("stable", route.endpoints)


def test_a_promotion_keeps_the_canary_share_until_the_operator_ends_it() -> None:
    body = _canary_md(50)
    del body["spec"]["canary"]  # type: ignore[attr-defined]
    assert routing.model_info(body).canary_weight is None
    body["status"] = {"canary": {"phase": "Canary", "weight": 50}}
    assert routing.model_info(body).canary_weight is None  # a rollback: no canary traffic
    body["status"] = {"canary": {"phase": "Promoting", "weight": 50}}
    assert routing.model_info(body).canary_weight == 50
