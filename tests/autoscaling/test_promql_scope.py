"""A tenant's promql metric sees only its own namespace (issue 24, item 3).

The pure part (scope.scoped: parse, inject or enforce `namespace="<own>"`, render, read
back) is table-tested; the rest runs against a real Prometheus holding the same series
names in two namespaces: the scoped query answers only from its own, hostile queries
are refused with a condition, the query timeout reaches Prometheus, and the status the
autoscaler publishes carries neither the other namespace's values nor its labels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from berth_operator.autoscaling.prometheus import Prometheus, Unavailable
from berth_operator.autoscaling.scope import NotScopable, scoped
from berth_operator.settings import from_env
from loop_host import Host, one_tick
from promstack import Prom, start

A, B = "team-a", "team-b"
SECRET = "b-secret-value"  # a label value only team-b's series carry

# --- pure: what is run, what is refused ------------------------------------------------

SCOPED = [
    # a bare selector gets the matcher
    ("up", 'up{namespace="team-a"}'),
    # an explicit matcher naming the own namespace is kept, once
    ('up{namespace="team-a"}', 'up{namespace="team-a"}'),
    # inside functions, aggregations and ranges
    ("sum by (queue) (rate(jobs_total[5m]))",
     'sum by (queue) (rate(jobs_total{namespace="team-a"}[300000ms]))'),
    # both sides of a binary operation, with its matching clause
    ("a / on (pod) b", '(a{namespace="team-a"}) / on (pod) (b{namespace="team-a"})'),
    # a subquery, offsets and @
    ("max_over_time(q[10m:1m] offset 5m)",
     'max_over_time((q{namespace="team-a"})[600000ms:60000ms] offset 300000ms)'),
    # a name matcher alone (every series of the namespace, none of another)
    ('count({__name__=~".+"})', 'count ({__name__=~".+",namespace="team-a"})'),
    # a label value that looks like the end of a selector stays one value
    ('q{x="\\"} or q{namespace=\\"team-b\\"}"}',
     'q{x="\\"} or q{namespace=\\"team-b\\"}",namespace="team-a"}'),
    # control characters are escaped for Prometheus' parser
    ('q{x="\\n"}', 'q{x="\\x0a",namespace="team-a"}'),
    # no selector, nothing to scope
    ("vector(3)", "vector(3.0)"),
]  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize(("query", "want"), SCOPED)
def test_scoped_queries(query: str, want: str) -> None:
    assert scoped(query, A, "namespaced") == want


REFUSED = [
    # another namespace, by name
    ('sum(q{namespace="team-b"})', 'namespace="team-b"'),
    # a regex could match any namespace
    ('q{namespace=~"team-.*"}', 'namespace=~"team-.*"'),
    # even one that matches only the own namespace: one rule, no regex reading
    ('q{namespace=~"team-a"}', "namespace=~"),
    # a negative matcher means every other namespace
    ('q{namespace!="team-a"}', "namespace!="),
    ('q{namespace!~"x"}', "namespace!~"),
    # the own namespace and another one
    ('q{namespace="team-a"} or q{namespace="team-b"}', 'namespace="team-b"'),
    # info() joins target_info, which no selector of the query names
    ("info(up)", "info()"),
    # or-matchers are not PromQL (the parser's extension): refused, not half scoped
    ('q{a="1" or b="2"}', "or-matchers"),
    # what does not parse is refused, with the parser's words
    ("sum(rate(", "does not parse"),
]  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize(("query", "words"), REFUSED)
def test_unscopable_queries_are_refused(query: str, words: str) -> None:
    with pytest.raises(NotScopable, match=None) as info:
        scoped(query, A, "namespaced")
    assert words in str(info.value), str(info.value)


@pytest.mark.unit
def test_modes() -> None:
    q = 'sum(q{namespace="team-b"})'
    assert scoped(q, A, "unrestricted") == q  # a single-tenant cluster's choice
    with pytest.raises(NotScopable, match="turned off on this cluster"):
        scoped("vector(1)", A, "off")
    assert from_env({}).autoscaling.promql == "namespaced"  # the default
    assert from_env({"BERTH_OPERATOR_AUTOSCALING_PROMQL": "off"}).autoscaling.promql == "off"
    with pytest.raises(ValueError, match="BERTH_OPERATOR_AUTOSCALING_PROMQL='open'"):
        from_env({"BERTH_OPERATOR_AUTOSCALING_PROMQL": "open"})
    with pytest.raises(ValueError, match="less than BERTH_OPERATOR_AUTOSCALING_TICK_SECONDS"):
        from_env({"BERTH_OPERATOR_AUTOSCALING_QUERY_TIMEOUT": "3"})


# --- against the real Prometheus -------------------------------------------------------


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    for p in start(tmp_path_factory.mktemp("prom-scope")):
        # the same series names in both namespaces; team-b's carry a label value of its own
        p.gauge({"__name__": "queue_length", "namespace": A, "queue": "jobs"}, 3)
        p.gauge({"__name__": "queue_length", "namespace": B, "queue": "jobs", "owner": SECRET},
                40)  # fmt: skip
        p.gauge({"__name__": "queue_length", "namespace": B, "queue": "mail"}, 500)
        p.counter({"__name__": "jobs_total", "namespace": A, "queue": "jobs"}, 2)
        p.gauge({"__name__": "odd", "namespace": A, "x": ODD}, 7)
        p.gauge({"__name__": "odd", "namespace": B, "x": ODD}, 70)
        p.counter({"__name__": "jobs_total", "namespace": B, "queue": "jobs"}, 70)
        yield p


ODD = 'a"b\\c\nd\té}{,=~ `x` \x01'  # quotes, backslash, control characters, braces


@pytest.mark.integration
async def test_label_values_are_rendered_as_prometheus_reads_them(prom: Prom) -> None:
    """The renderer's quoting, read back by Prometheus' own (Go) parser, matches the
    exact value: nothing is lost, nothing escapes the string."""
    from berth_operator.autoscaling.scope import quote

    query = f"sum(odd{{x={quote(ODD)}}})"
    client = Prometheus(prom.url)
    try:
        got = await client.vector(scoped(query, A, "namespaced"))
    finally:
        await client.close()
    assert [float(s["value"][1]) for s in got] == [7.0], got


HOSTILE = [
    # the plain aggregate a tenant writes: only its own series are summed
    ("sum(queue_length)", 3.0),
    ("sum(rate(jobs_total[10s]))", 2.0),
    # every series of every metric: only the own namespace's count
    ('count({__name__=~".+"})', 3.0),
    # a label that only another namespace's series carry: nothing found
    (f'sum(queue_length{{owner="{SECRET}"}}) or vector(0)', 0.0),
    # a label value crafted to close the selector and open another one
    ('sum(queue_length{queue!="\\"} or queue_length{namespace=\\"team-b\\"}"})', 3.0),
    # a subquery over the other namespace's rate still reads only the own one
    ("max(max_over_time(rate(jobs_total[10s])[30s:5s]))", 2.0),
]  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(("query", "want"), HOSTILE)
async def test_scoped_query_sees_only_its_namespace(prom: Prom, query: str, want: float) -> None:
    client = Prometheus(prom.url)
    try:
        # unscoped, the query does see team-b (so the row can fail)
        everything = await client.vector(query)
        assert everything, query
        got = await client.vector(scoped(query, A, "namespaced"))
    finally:
        await client.close()
    assert [float(s["value"][1]) for s in got] == [want], got
    assert all(s["metric"].get("namespace", A) == A for s in got), got


def promql_model(host: Host, ns: str, name: str, query: str) -> tuple[str, str]:
    metric = {"type": "promql", "query": query, "target": 1}
    return host.add(ns, name, {"minReplicas": 1, "maxReplicas": 1000, "metric": metric})


@pytest.mark.integration
async def test_status_carries_only_the_own_value_and_no_foreign_labels(prom: Prom) -> None:
    host = Host()
    # one series per queue and owner: two of them in team-b, one in team-a
    key = promql_model(host, A, "m", "sum by (queue, owner) (queue_length)")
    total = promql_model(host, A, "total", "sum(queue_length)")
    await one_tick(host, prom.url)
    assert host.status(total)["value"] == 3.0  # not 543
    assert host.condition(total, "ScalingActive")["status"] == "True"
    assert host.status(key)["value"] == 3.0
    published = json.dumps(list(host.autoscaling.values()))
    for foreign in (SECRET, "mail", "40", "500", "543", B):
        assert foreign not in published, (foreign, published)


@pytest.mark.integration
async def test_unscoped_several_series_are_counted_not_quoted(prom: Prom) -> None:
    """Where a cluster chose unrestricted, a query over every namespace still has no
    other namespace's label values quoted in the status."""
    host = Host()
    key = promql_model(host, A, "m", "sum by (owner, queue) (queue_length)")
    await one_tick(host, prom.url, promql="unrestricted")
    active = host.condition(key, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "InvalidMetricQuery"), active
    assert "returned 3 series" in active["message"]
    assert SECRET not in json.dumps(list(host.autoscaling.values()))


@pytest.mark.integration
async def test_foreign_namespace_refused_with_a_condition(prom: Prom) -> None:
    host = Host()
    key = promql_model(host, A, "m", 'sum(queue_length{namespace="team-b"})')
    good = promql_model(host, A, "good", "sum(queue_length)")
    await one_tick(host, prom.url)
    active = host.condition(key, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "InvalidMetricQuery"), active
    assert active["message"].startswith("spec.autoscaling.metric.query: ")
    assert 'namespace="team-b"' in active["message"] and "own namespace" in active["message"]
    assert "value" not in host.status(key)  # nothing was run
    assert host.status(good)["value"] == 3.0  # a refusal does not affect the others


@pytest.mark.integration
async def test_off_refuses_every_promql_metric(prom: Prom) -> None:
    host = Host()
    key = promql_model(host, A, "m", "vector(1)")
    await one_tick(host, prom.url, promql="off")
    active = host.condition(key, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "InvalidMetricQuery"), active
    assert "turned off on this cluster" in active["message"]


HEAVY = "sum(count_over_time(jobs_total[70m:1ms]))"  # some 4 million subquery steps


@pytest.mark.integration
async def test_the_timeout_reaches_prometheus(prom: Prom) -> None:
    """Prometheus itself abandons a query past the timeout (the timeout= parameter): its
    own "timed out" answer comes back, a clean MetricsUnavailable, not a client hang-up."""
    slow = Prometheus(prom.url, timeout=0.05)
    try:
        with pytest.raises(Unavailable, match=r"abandoned the query after the timeout of 0\.05 s"):
            await slow.vector(HEAVY)
    finally:
        await slow.close()
    # the same query within a generous timeout answers: the refusal was the timeout
    patient = Prometheus(prom.url, timeout=30)
    try:
        assert await patient.vector(HEAVY)
    finally:
        await patient.close()


@pytest.mark.unit
@pytest.mark.parametrize(
    "rendered",
    ["up", 'up{namespace="team-b"}', 'rate(up{namespace="team-a"}[5m]) + down',
     'max_over_time(q[5m:1m])', 'up{namespace="team-a",namespace="team-b"}'],
)  # fmt: skip
def test_the_read_back_check_catches_an_unscoped_selector(rendered: str) -> None:
    """The last line of defence: what is run is parsed again and every selector checked."""
    import promql_parser
    from berth_operator.autoscaling.scope import check

    with pytest.raises(NotScopable, match="not scoped"):
        check(promql_parser.parse(rendered), A, "namespace")
    check(promql_parser.parse(scoped(rendered.replace('namespace="team-b"', ""), A,
                                     "namespaced")), A, "namespace")  # fmt: skip
