"""Tenant PromQL, scoped to the tenant's own namespace (pure; prom-label-proxy style).

A `promql` metric is a query a tenant writes; the operator runs it with its own view of
Prometheus. The cluster setting `autoscaling.promql` chooses what that may see:

  off           promql metrics are refused (a condition says so);
  namespaced    (the default) every vector and matrix selector gets the matcher
                `namespace="<the model's namespace>"`; a selector that already says
                exactly that keeps it, any other matcher on the namespace label
                (another namespace, `!=`, `=~`, `!~`) is refused, and so is what cannot
                be scoped (Prometheus 3 functions the parser does not know, `info()`,
                which reads `target_info` without a selector, or-matchers);
  unrestricted  the query runs as written (single-tenant clusters).

The query is parsed by a real PromQL parser (promql-parser, the Rust one behind
GreptimeDB) and rendered again by `render` below, which quotes every string itself and
parenthesises every operand (so precedence never depends on the renderer), then parsed
once more and checked: every selector of what Prometheus will run carries the matcher.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from typing import Any

import promql_parser as pq

MODES = ("off", "namespaced", "unrestricted")
_IDENT = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# functions that read series no selector names (Prometheus 3's info() joins target_info)
_IMPLICIT_READS = frozenset({"info"})
_OPS = ((pq.MatchOp.Equal, "="), (pq.MatchOp.NotEqual, "!="), (pq.MatchOp.Re, "=~"),
        (pq.MatchOp.NotRe, "!~"))  # fmt: skip
_AGGREGATIONS = frozenset({
    "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "count_values", "quantile", "limitk", "limit_ratio",
})  # fmt: skip
_BINARY = frozenset({
    "+", "-", "*", "/", "%", "^", "atan2", "==", "!=", ">", "<", ">=", "<=",
    "and", "or", "unless",
})  # fmt: skip


class NotScopable(ValueError):
    """The query cannot be run for this tenant; the message says why and what is allowed."""


def scoped(query: str, namespace: str, mode: str, label: str = "namespace") -> str:
    """The query to run for a model of `namespace` under `mode`; raises NotScopable."""
    if mode == "unrestricted":
        return query
    if mode == "off":
        raise NotScopable(
            "promql metrics are turned off on this cluster (operator setting "
            "BERTH_OPERATOR_AUTOSCALING_PROMQL=off); use another metric type"
        )
    if mode != "namespaced":
        raise NotScopable(f"unknown promql mode {mode!r}; allowed: {', '.join(MODES)}")
    expr = _parse(query)
    out = render(expr, namespace, label)
    check(_parse(out), namespace, label)  # what Prometheus will run, read back
    return out


@functools.lru_cache(maxsize=4096)
def cached(query: str, namespace: str, mode: str, label: str) -> tuple[str, str]:
    """(scoped query, "") or ("", why not): `scoped` once per distinct query and namespace,
    not once per tick (queries rarely change)."""
    try:
        return scoped(query, namespace, mode, label), ""
    except NotScopable as exc:
        return "", str(exc)


def _parse(query: str) -> Any:
    try:
        return pq.parse(query)
    except Exception as exc:  # ValueError from the parser; anything else is refusal too
        raise NotScopable(f"the query does not parse (parse error: {exc})") from None


def check(expr: Any, namespace: str, label: str) -> None:
    """Every selector of `expr` has exactly one namespace matcher: `label="namespace"`."""

    def visit(node: Any) -> bool:
        if isinstance(node, pq.VectorSelector):
            mine = [m for m in node.matchers.matchers if m.name == label]
            if (
                node.matchers.or_matchers
                or len(mine) != 1
                or _op(mine[0]) != "="
                or (mine[0].value != namespace)
            ):
                raise NotScopable(f"internal: a selector is not scoped to {label}={namespace!r}")
        return True

    pq.walk(expr, pre_visit=visit)


def render(node: Any, namespace: str, label: str) -> str:
    """PromQL text for `node`, every selector restricted to `label="namespace"`."""
    r = _Renderer(namespace, label)
    return r.expr(node)


class _Renderer:
    def __init__(self, namespace: str, label: str) -> None:
        self.namespace = namespace
        self.label = label

    def expr(self, n: Any) -> str:
        if isinstance(n, pq.NumberLiteral):
            return _number(n.val)
        if isinstance(n, pq.StringLiteral):
            return quote(n.val)
        if isinstance(n, pq.VectorSelector):
            return self.selector(n)
        if isinstance(n, pq.MatrixSelector):
            vs = n.vector_selector
            return (
                f"{self.selector(vs, modifiers=False)}[{_duration(n.range)}]"
                f"{_modifiers(vs.offset, vs.at)}"
            )
        if isinstance(n, pq.ParenExpr):
            return f"({self.expr(n.expr)})"
        if isinstance(n, pq.UnaryExpr):
            return f"-({self.expr(n.expr)})"
        if isinstance(n, pq.SubqueryExpr):
            if n.range is None:
                raise NotScopable("a subquery without a range")
            step = _duration(n.step) if n.step is not None else ""
            return f"({self.expr(n.expr)})[{_duration(n.range)}:{step}]{_modifiers(n.offset, n.at)}"
        if isinstance(n, pq.Call):
            name = _ident(n.func.name, "function")
            if name in _IMPLICIT_READS:
                raise NotScopable(
                    f"{name}() reads series that no selector of the query names, so it cannot "
                    "be restricted to the model's namespace"
                )
            return f"{name}({', '.join(self.expr(a) for a in n.args)})"
        if isinstance(n, pq.AggregateExpr):
            op = str(n.op)
            if op not in _AGGREGATIONS:
                raise NotScopable(f"unsupported aggregation {op!r}")
            grouping = ""
            if n.modifier is not None:
                kind = "by" if n.modifier.type == pq.AggModifierType.By else "without"
                grouping = f" {kind} ({_labels(n.modifier.labels)})"
            args = self.expr(n.expr)
            if n.param is not None:
                args = f"{self.expr(n.param)}, {args}"
            return f"{op}{grouping} ({args})"
        if isinstance(n, pq.BinaryExpr):
            return self.binary(n)
        raise NotScopable(f"unsupported PromQL expression {type(n).__name__}")

    def binary(self, n: Any) -> str:
        op = str(n.op)
        if op not in _BINARY:
            raise NotScopable(f"unsupported binary operator {op!r}")
        mod = n.modifier
        parts = [op]
        if mod is not None:
            fill = mod.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise NotScopable("fill modifiers on binary operators are not supported")
            if mod.return_bool:
                parts.append("bool")
            if mod.matching is not None:
                kind = "on" if mod.matching.type == pq.LabelModifierType.Include else "ignoring"
                parts.append(f"{kind} ({_labels(mod.matching.labels)})")
            card = mod.card
            if card == pq.VectorMatchCardinality.ManyToOne:
                parts.append(f"group_left ({_labels(mod.group_labels or [])})")
            elif card == pq.VectorMatchCardinality.OneToMany:
                parts.append(f"group_right ({_labels(mod.group_labels or [])})")
        return f"({self.expr(n.lhs)}) {' '.join(parts)} ({self.expr(n.rhs)})"

    def selector(self, n: Any, modifiers: bool = True) -> str:
        if n.matchers.or_matchers:
            raise NotScopable('or-matchers inside a selector ({a="1" or b="2"}) are not PromQL')
        matchers = []
        for m in n.matchers.matchers:
            name = _ident(m.name, "label name")
            op = _op(m)
            if name == self.label:
                if op != "=" or m.value != self.namespace:
                    raise NotScopable(
                        f"the selector matches {name}{op}{quote(m.value)}: a promql metric sees "
                        f"only its own namespace; leave {name} out (the operator adds "
                        f"{name}={quote(self.namespace)}) or write exactly that"
                    )
                continue  # added once below
            matchers.append(f"{name}{op}{quote(m.value)}")
        matchers.append(f"{self.label}={quote(self.namespace)}")
        head = ""
        if n.name:
            if not _METRIC.fullmatch(n.name):
                raise NotScopable(f"metric name {n.name!r} is not a plain identifier")
            head = n.name
        text = f"{head}{{{','.join(matchers)}}}"
        return text + (_modifiers(n.offset, n.at) if modifiers else "")


def _op(m: Any) -> str:
    for known, text in _OPS:
        if m.op == known:
            return text
    raise NotScopable(f"unsupported matcher operator {m.op!r}")


def _ident(name: str, what: str) -> str:
    if not _IDENT.fullmatch(name):
        raise NotScopable(f"{what} {name!r} is not a plain identifier")
    return name


def _labels(names: list[str]) -> str:
    return ", ".join(_ident(n, "label name") for n in names)


def quote(value: str) -> str:
    """A PromQL double-quoted string Prometheus' (Go) parser reads back as `value`."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _duration(delta: datetime.timedelta) -> str:
    ms = round(delta.total_seconds() * 1000)
    return f"{ms}ms"


def _modifiers(offset: datetime.timedelta | None, at: Any) -> str:
    out = ""
    if at is not None:
        if at.type == pq.AtModifierType.Start:
            out += " @ start()"
        elif at.type == pq.AtModifierType.End:
            out += " @ end()"
        else:
            out += f" @ {at.at.timestamp():.3f}"
    if offset is not None:
        out += f" offset {_duration(offset)}"
    return out
