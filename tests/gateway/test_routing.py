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
