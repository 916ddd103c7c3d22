"""Pure start-up assembly: a pod's timeline + the runtime's own phases -> status.startup.

The phases of one cold start, from the wake-up (the replicas of the ModelDeployment going
from 0 to more, seen by the operator) or, without a wake, the pod's creation, to Ready:

  Scheduling  wake-up (or pod created) -> the pod's PodScheduled condition
  Pulling     scheduled -> the runtime process started (kubelet: pod sandbox, image pull
              when the image is not on the node, container start); the end is the
              runtime's own process start time (10 ms), else the container's startedAt
  Fetching    reported by the runtime: the model URI resolved to local files
  Loading     reported by the runtime: the model read onto the device
  WarmingUp   reported by the runtime: the warm-up inference
  Ready       the runtime ready -> the pod's Ready condition (the kubelet's readiness
              probe noticing it and writing the pod status)

The runtime's interpreter start and imports (process start -> its first phase) belong to
no phase; `message` says how long they took. Timestamps from the API server have a
resolution of one second; where the operator saw a transition happen on its watch, its
own clock (milliseconds) replaces the API's, see `sharpen`. A phase whose data is missing
(the runtime could not be read) is left out and `message` says why: missing is not zero.

Everything here takes plain data and returns plain data; the reading is in
startup_reader.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PHASES = ("Scheduling", "Pulling", "Fetching", "Loading", "WarmingUp", "Ready")
RUNTIME_PHASES = ("Fetching", "Loading", "WarmingUp")
# An operator-observed stamp replaces the API's (whole-second) one when it lies within
# this many seconds after it: the truncation (1 s) plus watch delivery.
SHARPEN_WINDOW_S = 1.5
# A pod created within this many seconds after a wake-up is the one the wake-up asked for.
WAKE_WINDOW_S = 600.0


def parse_time(value: object) -> float | None:
    """An RFC 3339 timestamp from the API as unix seconds (None when absent or bad)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(ts: float) -> str:
    """Unix seconds as RFC 3339 with milliseconds, UTC."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sharpen(api: float | None, seen: float | None) -> float | None:
    """The better of an API timestamp (floored to the second) and the operator's own."""
    if api is None:
        return seen
    if seen is not None and api - 0.01 <= seen <= api + SHARPEN_WINDOW_S:
        return seen
    return api


@dataclass(frozen=True)
class PodTimes:
    """One pod's start-up timeline, from its body (API timestamps, unix seconds)."""

    name: str
    uid: str
    ip: str = ""
    created: float | None = None
    scheduled: float | None = None
    started: float | None = None  # the runtime container's state.running.startedAt
    ready: float | None = None  # Ready condition's lastTransitionTime while Ready is True
    deleting: bool = False

    @property
    def is_ready(self) -> bool:
        return self.ready is not None and not self.deleting


def observe_pod(body: Mapping[str, Any], container: str = "runtime") -> PodTimes:
    meta = body.get("metadata") or {}
    st = body.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}

    def true_since(kind: str) -> float | None:
        c = conds.get(kind) or {}
        return parse_time(c.get("lastTransitionTime")) if c.get("status") == "True" else None

    started = None
    for cs in st.get("containerStatuses") or []:
        if cs.get("name") == container:
            started = parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
    return PodTimes(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        ip=str(st.get("podIP") or ""),
        created=parse_time(meta.get("creationTimestamp")),
        scheduled=true_since("PodScheduled"),
        started=started,
        ready=true_since("Ready"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True)
class Seen:
    """When the operator itself saw a pod's transitions on its watch (unix seconds); None
    where the pod was already past them when first seen. `state` is what was seen last
    (scheduled, started, ready)."""

    created: float | None = None
    scheduled: float | None = None
    started: float | None = None
    ready: float | None = None
    state: tuple[bool, bool, bool] = (False, False, False)


def seen_next(before: Seen | None, pod: PodTimes, now: float) -> Seen:
    """Record `now` for each transition that happened since the previous observation."""
    state = (pod.scheduled is not None, pod.started is not None, pod.ready is not None)
    if before is None:  # first sight: only a pod not yet scheduled is "just created"
        return Seen(created=now if not state[0] else None, state=state)
    stamps = []
    for old, new, stamp in zip(
        before.state, state, (before.scheduled, before.started, before.ready), strict=True
    ):
        # a new transition gets `now`; a flag that went back (Ready lost) forgets its stamp
        stamps.append(stamp if old and new else (now if new else None))
    return Seen(before.created, stamps[0], stamps[1], stamps[2], state)


@dataclass(frozen=True)
class RuntimeReport:
    """The runtime's GET /startup document (unix seconds)."""

    process_started: float | None
    imported: float | None
    ready: float | None
    phases: tuple[tuple[str, float, float], ...]  # (name, start, end), finished ones


# The runtime's document is the tenant's: bounds on everything in it.
MAX_TIME = 2.0**33  # unix seconds (the year 2242): larger is no clock reading
MAX_PHASES = 16  # entries in "phases" (the runtime reports 3)
MAX_DEPTH = 8  # nesting of arrays and objects (the document has 3)


def decode_report(body: bytes) -> RuntimeReport:
    """The runtime's answer (UTF-8 JSON) as a report; ValueError says what is wrong.

    Every malformed answer ends here as one ValueError: not UTF-8, not JSON, nested too
    deeply for the parser, numbers out of range, wrong types.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: JSON, the int-digit limit
        raise ValueError(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    return parse_report(doc)


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (a cheap scan before parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _time(value: object, what: str) -> float | None:
    """A unix time from the document: None when absent, ValueError when not a sane one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number")
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"{what} is out of range") from None
    if not math.isfinite(out) or not 0.0 <= out <= MAX_TIME:
        raise ValueError(f"{what} is out of range (unix seconds, 0 to {MAX_TIME:.0f})")
    return out


def parse_report(doc: object) -> RuntimeReport:
    """Validate the runtime's document; ValueError says what is wrong with it."""
    if not isinstance(doc, Mapping):
        raise ValueError("not a JSON object")
    raw = doc.get("phases")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ValueError("phases is not a list")
    if len(raw) > MAX_PHASES:
        raise ValueError(f"phases has more than {MAX_PHASES} entries")
    phases = []
    for i, p in enumerate(raw):
        if not isinstance(p, Mapping) or p.get("name") not in RUNTIME_PHASES:
            raise ValueError(f"phases[{i}] is not one of {', '.join(RUNTIME_PHASES)}")
        start, end = (
            _time(p.get("start"), f"phases[{i}].start"),
            _time(p.get("end"), f"phases[{i}].end"),
        )
        if start is not None and end is not None:
            phases.append((str(p["name"]), start, end))
    return RuntimeReport(
        process_started=_time(doc.get("processStartedAt"), "processStartedAt"),
        imported=_time(doc.get("importedAt"), "importedAt"),
        ready=_time(doc.get("readyAt"), "readyAt"),
        phases=tuple(phases),
    )


def _phase(name: str, start: float | None, end: float | None) -> dict[str, Any] | None:
    if start is None or end is None:
        return None
    return {
        "name": name,
        "startedAt": format_time(start),
        "seconds": round(max(0.0, end - start), 3),
    }


def assemble(
    pod: PodTimes,
    seen: Seen | None,
    report: RuntimeReport | None,
    *,
    woken_at: float | None = None,
    missing: str = "",
) -> dict[str, Any] | None:
    """status.startup for one Ready pod; None when the pod is not Ready.

    `woken_at`: when the model was woken from zero (the pod is the one that wake made);
    `missing`: why `report` is None (the runtime could not be read).
    """
    if not pod.is_ready:
        return None
    seen = seen or Seen()
    created = sharpen(pod.created, seen.created)
    scheduled = sharpen(pod.scheduled, seen.scheduled)
    ready = sharpen(pod.ready, seen.ready)
    assert ready is not None
    begin = woken_at if woken_at is not None else created
    ran = report.process_started if report and report.process_started else None
    container_up = ran if ran is not None else sharpen(pod.started, seen.started)
    runtime = {name: (s, e) for name, s, e in (report.phases if report else ())}
    last_runtime = max((e for _, e in runtime.values()), default=None)
    runtime_ready = report.ready if report and report.ready else last_runtime

    phases = [
        _phase("Scheduling", begin, scheduled),
        _phase("Pulling", scheduled, container_up),
        *(_phase(n, *runtime[n]) if n in runtime else None for n in RUNTIME_PHASES),
        _phase("Ready", runtime_ready, ready),
    ]
    kept = [p for p in phases if p is not None]
    total = max(0.0, ready - begin) if begin is not None else None
    notes = []
    absent = [n for n, p in zip(PHASES, phases, strict=True) if p is None]
    if absent:
        why = missing or "no data"
        notes.append(f"{', '.join(absent)} not measured: {why}")
    if report and report.process_started and report.imported:
        notes.append(
            f"runtime process start and imports before Fetching: "
            f"{max(0.0, report.imported - report.process_started):.2f} s (in no phase)"
        )
    out: dict[str, Any] = {
        "pod": pod.name,
        "trigger": "WokenFromZero" if woken_at is not None else "PodCreated",
        "phases": kept,
        "readyAt": format_time(ready),
    }
    if begin is not None:
        out["startedAt"] = format_time(begin)
    if total is not None:
        out["totalSeconds"] = round(total, 3)
    if notes:
        out["message"] = "; ".join(notes)
    return out


def wake_applies(woken_at: float | None, pod: PodTimes, seen: Seen | None) -> bool:
    """Whether the pod was created by the wake-up at `woken_at` (created just after it)."""
    if woken_at is None:
        return False
    created = sharpen(pod.created, (seen or Seen()).created)
    # the API's creationTimestamp is floored to the second: allow that much before
    return created is not None and woken_at - 1.0 <= created <= woken_at + WAKE_WINDOW_S
