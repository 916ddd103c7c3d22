"""Pure functions over result rows: the ratio table and the goals; plus the plot.

A row is a dict with at least: server, variant, label, model, concurrency, status,
rps, p50_ms, p99_ms, error_rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Row = dict[str, Any]
PEERS = ("kserve", "litserve", "torchserve", "rayserve")


def _ok(rows: list[Row], **match: Any) -> list[Row]:
    return [
        r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())
    ]


def _best(rows: list[Row]) -> Row | None:
    return max(rows, key=lambda r: r["rps"], default=None)


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or math.isnan(b):
        return math.nan
    return a / b


def nearest_concurrency(rows: list[Row], want: int) -> int | None:
    """The measured concurrency closest to `want` (ties: the larger)."""
    levels = sorted({r["concurrency"] for r in rows if r.get("status") == "ok"})
    if not levels:
        return None
    return min(levels, key=lambda c: (abs(c - want), -c))


def ratios(
    rows: list[Row],
    ceilings: dict[str, float],
    models: list[str],
    goal_c: int = 32,
    batch_c: int = 128,
    ceiling_cpu: dict[str, float] | None = None,
) -> list[Row]:
    """One line per model: Berth's best variant against the best peer at `goal_c`
    and against the in-process ceiling at `batch_c` (or the nearest measured level)."""
    out: list[Row] = []
    c1 = nearest_concurrency(rows, goal_c)
    c2 = nearest_concurrency(rows, batch_c)
    for m in models:
        berth = _best(_ok(rows, server="berth", model=m, concurrency=c1))
        berth_json = _best(
            [
                r
                for r in _ok(rows, server="berth", model=m, concurrency=c1)
                if r["variant"] != "oip-binary"
            ]
        )
        peer = _best([r for r in _ok(rows, model=m, concurrency=c1) if r["server"] in PEERS])
        berth_c2 = _best(_ok(rows, server="berth", model=m, concurrency=c2))
        line: Row = {
            "model": m,
            "concurrency": c1,
            "berth": berth and berth["label"],
            "berth_rps": berth and berth["rps"],
            "berth_p99_ms": berth and berth["p99_ms"],
            "best_peer": peer and peer["label"],
            "peer_rps": peer and peer["rps"],
            "peer_p99_ms": peer and peer["p99_ms"],
            "berth_over_best_peer": _ratio(berth and berth["rps"], peer and peer["rps"]),
            "berth_json_over_best_peer": _ratio(
                berth_json and berth_json["rps"], peer and peer["rps"]
            ),
            "p99_not_worse": bool(berth and peer and berth["p99_ms"] <= peer["p99_ms"]),
            "ceiling_concurrency": c2,
            "ceiling_rps": ceilings.get(m),
            "berth_over_ceiling": _ratio(berth_c2 and berth_c2["rps"], ceilings.get(m)),
            # CPU efficiency: the ceiling's CPU s per 1k items over Berth's CPU s per 1k
            # requests; unlike req/s it does not depend on the CPU share a busy host gives.
            "berth_cpu_efficiency": _ratio(
                (ceiling_cpu or {}).get(m), berth_c2 and berth_c2.get("server_cpu_s_per_1k")
            ),
        }
        if m == "trivial":
            hello = _best(_ok(rows, server="uvicorn-hello", model=m, concurrency=c1))
            line["uvicorn_rps"] = hello and hello["rps"]
            line["berth_over_uvicorn"] = _ratio(berth and berth["rps"], hello and hello["rps"])
        out.append(line)
    return out


def goals(table: list[Row]) -> list[Row]:
    """The issue's three goals, evaluated (reported, never asserted)."""
    out: list[Row] = []
    for line in table:
        m = line["model"]
        if m in ("cnn", "embedding"):
            r = line["berth_over_best_peer"]
            out.append(
                {
                    "goal": f"{m}: throughput >= 1.5x best peer at equal or lower p99 "
                    f"(c={line['concurrency']})",
                    "value": r,
                    "met": bool(r >= 1.5 and line["p99_not_worse"]),
                }
            )
        if m == "trivial":
            r = line.get("berth_over_uvicorn", math.nan)
            out.append(
                {
                    "goal": f"trivial: req/s >= 0.7x bare uvicorn (c={line['concurrency']})",
                    "value": r,
                    "met": bool(r >= 0.7),
                }
            )
        if m in ("cnn", "embedding"):
            r = line["berth_over_ceiling"]
            out.append(
                {
                    "goal": f"{m}: >= 0.8x in-process ceiling (c={line['ceiling_concurrency']})",
                    "value": r,
                    "met": bool(r >= 0.8),
                }
            )
    return out


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def format_rows(rows: list[Row]) -> str:
    head = (
        f"{'model':9} {'server':26} {'c':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>9} "
        f"{'err%':>5} {'cpu s/1k':>8}  note"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["model"], r["concurrency"], r["label"])):
        if r.get("status") != "ok":
            lines.append(
                f"{r['model']:9} {r['label']:26} {r['concurrency']:>4} FAILED: "
                f"{str(r.get('reason', ''))[:90]}"
            )
            continue
        lines.append(
            f"{r['model']:9} {r['label']:26} {r['concurrency']:>4} {_f(r['rps']):>9} "
            f"{_f(r['p50_ms']):>8} {_f(r['p99_ms']):>9} {_f(100 * r['error_rate'], 2):>5} "
            f"{_f(r.get('server_cpu_s_per_1k')):>8}  "
            f"{'loadgen busy ' + _f(100 * r['loadgen_cpu_util'], 0) + '%' if r.get('loadgen_cpu_util', 0) > 0.8 else ''}"
        )
    return "\n".join(lines)


def format_ratios(table: list[Row], goal_rows: list[Row]) -> str:
    lines = ["Ratios (Berth = its best protocol variant at that concurrency)"]
    for t in table:
        s = (
            f"  {t['model']:9} c={t['concurrency']}: Berth {_f(t['berth_rps'])} req/s "
            f"p99 {_f(t['berth_p99_ms'])} ms [{t['berth']}] vs best peer "
            f"{_f(t['peer_rps'])} req/s p99 {_f(t['peer_p99_ms'])} ms [{t['best_peer']}]"
            f" -> Berth/best peer {_f(t['berth_over_best_peer'], 2)}"
            f" (JSON only {_f(t['berth_json_over_best_peer'], 2)});"
            f" Berth/in-process ceiling (c={t['ceiling_concurrency']}, ceiling "
            f"{_f(t['ceiling_rps'])}/s) {_f(t['berth_over_ceiling'], 2)}"
            f" (by CPU s per request {_f(t.get('berth_cpu_efficiency'), 2)})"
        )
        if "berth_over_uvicorn" in t:
            s += (
                f"; Berth/bare uvicorn {_f(t['berth_over_uvicorn'], 2)} "
                f"(uvicorn {_f(t['uvicorn_rps'])} req/s)"
            )
        lines.append(s)
    lines.append("Goals (reported, not asserted)")
    for g in goal_rows:
        lines.append(f"  [{'met' if g['met'] else 'NOT met'}] {g['goal']}: {_f(g['value'], 2)}")
    return "\n".join(lines)


def plot(rows: list[Row], models: list[str], path: Path) -> None:
    """Throughput against p99, one panel per model, one line per server/variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        labels = sorted({r["label"] for r in _ok(rows, model=m)})
        for label in labels:
            pts = sorted(_ok(rows, model=m, label=label), key=lambda r: r["concurrency"])
            ax.plot([r["p99_ms"] for r in pts], [r["rps"] for r in pts], marker="o", label=label)
            for r in pts:
                ax.annotate(str(r["concurrency"]), (r["p99_ms"], r["rps"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("p99 latency (ms, log)")
        ax.set_ylabel("requests/s")
        ax.set_title(m)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- gateway
# `berth bench gateway` measures windows: {"label": "direct" | "gateway", "round": r,
# "p50_ms", "p99_ms", "rps", "requests", "errors", "duration_s", "loadgen_cpu_s",
# "runtime_cpu_s", "gateway_cpu_s"}. Rounds pair one window of each path (ABBA order).

LOADGEN_BUSY = 0.8  # a load generator above this share of its core may be the bottleneck


def median(values: list[float]) -> float:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def spread(values: list[float]) -> list[float]:
    """[min, max] of the finite values ([nan, nan] for none)."""
    vals = [v for v in values if not math.isnan(v)]
    return [min(vals), max(vals)] if vals else [math.nan, math.nan]


def _per(num: float, den: float) -> float:
    return num / den if den and not math.isnan(den) and den > 0 else math.nan


def gateway_pairs(windows: list[Row]) -> Row:
    """Medians and [min, max] over rounds of one (model, concurrency) point.

    Added latency is the median of the per-round differences (gateway window minus the
    direct window of the same round), so a drift of the machine's load that moves both
    windows of a round cancels out; the spread shows how far single rounds disagree."""
    direct = {w["round"]: w for w in windows if w["label"] == "direct"}
    via = {w["round"]: w for w in windows if w["label"] == "gateway"}
    rounds = sorted(set(direct) & set(via))
    d = [direct[r] for r in rounds]
    g = [via[r] for r in rounds]

    def col(ws: list[Row], key: str) -> list[float]:
        return [float(w[key]) for w in ws]

    def ok(w: Row) -> int:
        return int(w["requests"]) - int(w["errors"])

    added50 = [b["p50_ms"] - a["p50_ms"] for a, b in zip(d, g, strict=True)]
    added99 = [b["p99_ms"] - a["p99_ms"] for a, b in zip(d, g, strict=True)]
    per_core = [_per(ok(w), w["gateway_cpu_s"]) for w in g]
    rt_d = [_per(w["runtime_cpu_s"] * 1000, ok(w)) for w in d]
    rt_g = [_per(w["runtime_cpu_s"] * 1000, ok(w)) for w in g]
    lg_util = [_per(w["loadgen_cpu_s"], w["duration_s"]) for w in d + g]
    return {
        "rounds": len(rounds),
        "direct_p50_ms": median(col(d, "p50_ms")),
        "direct_p50_ms_spread": spread(col(d, "p50_ms")),
        "gateway_p50_ms": median(col(g, "p50_ms")),
        "gateway_p50_ms_spread": spread(col(g, "p50_ms")),
        "added_p50_ms": median(added50),
        "added_p50_ms_spread": spread(added50),
        "added_p99_ms": median(added99),
        "added_p99_ms_spread": spread(added99),
        "direct_rps": median(col(d, "rps")),
        "gateway_rps": median(col(g, "rps")),
        # against the peer (the direct path), per round then the median
        "p50_ratio": median([_per(b["p50_ms"], a["p50_ms"]) for a, b in zip(d, g, strict=True)]),
        "rps_ratio": median([_per(b["rps"], a["rps"]) for a, b in zip(d, g, strict=True)]),
        # answered requests per CPU-second of the gateway process, per gateway window
        "gateway_rps_per_core": median(per_core),
        "gateway_rps_per_core_spread": spread(per_core),
        "gateway_cpu_ms_per_request": _per(1000.0, median(per_core)),
        # the model server's own CPU per request on each path: equal when both paths
        # asked the same work of it (the check the first gateway benchmark lacked)
        "runtime_cpu_ms_per_request_direct": median(rt_d),
        "runtime_cpu_ms_per_request_gateway": median(rt_g),
        # the gateway's own time per request (its histogram, the wait for the model
        # excluded): the part of the added latency that is the proxy's code, not the
        # machine's scheduling of one more process twice per request
        "gateway_own_us_p50": median([float(w.get("gateway_own_us_p50", math.nan)) for w in g]),
        "gateway_own_us_mean": median([float(w.get("gateway_own_us_mean", math.nan)) for w in g]),
        "loadgen_cpu_util_max": max(lg_util, default=math.nan),
        "loadgen_bound": any(u > LOADGEN_BUSY for u in lg_util),
        "errors": sum(int(w["errors"]) for w in d + g),
    }


def format_gateway(rows: list[Row]) -> str:
    """The table `berth bench gateway` prints: medians, [min..max] over rounds."""

    def rng(pair: list[float], nd: int = 2) -> str:
        return f"[{_f(pair[0], nd)}..{_f(pair[1], nd)}]"

    head = (
        f"{'model':9} {'c':>3} {'direct p50':>10} {'gw p50':>8} {'added p50 [min..max]':>24} "
        f"{'gw/direct p50':>13} {'gw/direct rps':>13} {'gw req/s/core [min..max]':>26} "
        f"{'rt cpu ms/req d|gw':>18} {'gw own us p50':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:9} {r['concurrency']:>3} {_f(r['direct_p50_ms'], 2):>10} "
            f"{_f(r['gateway_p50_ms'], 2):>8} "
            f"{_f(r['added_p50_ms'], 2):>7} {rng(r['added_p50_ms_spread']):>16} "
            f"{_f(r['p50_ratio'], 2):>13} {_f(r['rps_ratio'], 2):>13} "
            f"{_f(r['gateway_rps_per_core'], 0):>6} {rng(r['gateway_rps_per_core_spread'], 0):>19} "
            f"{_f(r['runtime_cpu_ms_per_request_direct'], 2):>8}|"
            f"{_f(r['runtime_cpu_ms_per_request_gateway'], 2):<8} "
            f"{_f(r.get('gateway_own_us_p50', math.nan), 0):>13}"
            + ("  LOADGEN BUSY" if r["loadgen_bound"] else "")
            + (f"  errors {r['errors']}" if r["errors"] else "")
        )
    return "\n".join(lines)


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], sum, count) of one Prometheus histogram in a
    text exposition, summed over its label sets."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "_bucket{"):
            le = head.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
        elif head.startswith(name + "_sum"):
            total += float(value)
        elif head.startswith(name + "_count"):
            count += float(value)
    return sorted(buckets.items()), total, count


def hist_delta(before: str, after: str, name: str) -> Row:
    """Mean and p50 (linear within its bucket) of the observations between two scrapes."""
    b0, s0, c0 = histogram(before, name)
    b1, s1, c1 = histogram(after, name)
    n = c1 - c0
    if n <= 0:
        return {"count": 0, "mean": math.nan, "p50": math.nan}
    prev = dict(b0)
    lo_bound, lo_count, p50 = 0.0, 0.0, math.nan
    for bound, cum in b1:
        cum -= prev.get(bound, 0.0)
        if cum >= n / 2:
            if math.isinf(bound):
                p50 = lo_bound
            else:
                frac = (n / 2 - lo_count) / (cum - lo_count) if cum > lo_count else 0.0
                p50 = lo_bound + (bound - lo_bound) * frac
            break
        lo_bound, lo_count = bound, cum
    return {"count": int(n), "mean": (s1 - s0) / n, "p50": p50}
