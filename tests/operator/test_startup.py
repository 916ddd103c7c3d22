"""Pure status.startup assembly (startup.py): pod timeline + runtime report -> phases."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import startup

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0  # a whole second, as the API's timestamps are


def iso(ts: float) -> str:
    return startup.format_time(ts).replace(".000Z", "Z")


def pod_body(
    *, scheduled: float | None = T0 + 1, started: float | None = T0 + 3,
    ready: float | None = T0 + 9, deleting: bool = False,
) -> dict[str, Any]:  # fmt: skip
    conds = []
    if scheduled is not None:
        conds.append({"type": "PodScheduled", "status": "True",
                      "lastTransitionTime": iso(scheduled)})  # fmt: skip
    conds.append({"type": "Ready", "status": "True" if ready is not None else "False",
                  "lastTransitionTime": iso(ready if ready is not None else T0)})  # fmt: skip
    containers = []
    if started is not None:
        containers.append({"name": "runtime", "state": {"running": {"startedAt": iso(started)}}})
    meta: dict[str, Any] = {"name": "m-abc", "uid": "u1", "creationTimestamp": iso(T0)}
    if deleting:
        meta["deletionTimestamp"] = iso(T0 + 20)
    return {"metadata": meta,
            "status": {"podIP": "10.0.0.5", "conditions": conds,
                       "containerStatuses": containers}}  # fmt: skip


REPORT = startup.RuntimeReport(
    process_started=T0 + 3.2,
    imported=T0 + 5.0,
    ready=T0 + 8.4,
    phases=(("Fetching", T0 + 5.0, T0 + 5.1), ("Loading", T0 + 5.1, T0 + 7.6),
            ("WarmingUp", T0 + 7.6, T0 + 8.3)),
)  # fmt: skip


def seconds(status: dict[str, Any]) -> dict[str, float]:
    return {p["name"]: p["seconds"] for p in status["phases"]}


def test_observe_pod_reads_the_timeline() -> None:
    pod = startup.observe_pod(pod_body())
    assert pod == startup.PodTimes(
        name="m-abc", uid="u1", ip="10.0.0.5", created=T0, scheduled=T0 + 1,
        started=T0 + 3, ready=T0 + 9,
    )  # fmt: skip
    assert pod.is_ready
    # Ready False, or a pod being deleted, is not a finished start
    assert not startup.observe_pod(pod_body(ready=None)).is_ready
    assert not startup.observe_pod(pod_body(deleting=True)).is_ready


def test_every_phase_from_pod_and_runtime() -> None:
    pod = startup.observe_pod(pod_body())
    out = startup.assemble(pod, None, REPORT)
    assert out is not None
    assert [p["name"] for p in out["phases"]] == list(startup.PHASES)
    assert seconds(out) == {
        "Scheduling": 1.0,  # created -> PodScheduled
        "Pulling": 2.2,  # scheduled -> the runtime process started (its own 10 ms clock)
        "Fetching": 0.1, "Loading": 2.5, "WarmingUp": 0.7,  # the runtime's report
        "Ready": 0.6,  # runtime ready -> pod Ready condition
    }  # fmt: skip
    assert out["totalSeconds"] == 9.0
    assert out["trigger"] == "PodCreated" and out["pod"] == "m-abc"
    assert out["startedAt"] == "2027-01-15T08:00:00.000Z"
    assert out["phases"][1]["startedAt"] == "2027-01-15T08:00:01.000Z"
    # the process start and imports are in no phase, and the message says how long
    assert "process start and imports before Fetching: 1.80 s" in out["message"]


def test_wake_up_starts_the_clock() -> None:
    pod = startup.observe_pod(pod_body())
    woken = T0 - 0.4  # the operator saw replicas 0 -> 1 just before the pod was created
    assert startup.wake_applies(woken, pod, None)
    out = startup.assemble(pod, None, REPORT, woken_at=woken)
    assert out is not None
    assert out["trigger"] == "WokenFromZero"
    assert out["totalSeconds"] == 9.4 and seconds(out)["Scheduling"] == 1.4


# (woken at, applies) -- why
WAKES = [
    (None, False),  # no wake-up: the pod's creation starts the clock
    (T0 - 0.5, True),  # creationTimestamp is floored to the second
    (T0 - 5, True),  # created 5 s after the wake-up (busy controllers): still its pod
    (T0 - 900, False),  # a wake-up long before: not this pod's
    (T0 + 700, False),  # a wake-up after the pod was created is not its cause
]


@pytest.mark.parametrize(("woken", "applies"), WAKES)
def test_wake_applies(woken: float | None, applies: bool) -> None:
    assert startup.wake_applies(woken, startup.observe_pod(pod_body()), None) is applies


def test_missing_runtime_report_is_absent_not_zero() -> None:
    pod = startup.observe_pod(pod_body())
    out = startup.assemble(pod, None, None, missing="GET http://10.0.0.5:8080/startup failed")
    assert out is not None
    # Pulling ends at the container's start; Ready has no runtime start to measure from
    assert [p["name"] for p in out["phases"]] == ["Scheduling", "Pulling"]
    assert seconds(out) == {"Scheduling": 1.0, "Pulling": 2.0}
    assert out["message"].startswith("Fetching, Loading, WarmingUp, Ready not measured: GET")
    assert out["totalSeconds"] == 9.0


def test_not_ready_pod_has_no_startup() -> None:
    assert startup.assemble(startup.observe_pod(pod_body(ready=None)), None, REPORT) is None


# (api, seen, expected) -- why
SHARPEN = [
    (T0, T0 + 0.37, T0 + 0.37),  # the operator's own stamp within the floored second wins
    (T0, None, T0),  # not seen happening (already past when first seen): the API's
    (T0, T0 + 30, T0),  # seen much later (the operator was away): the API's
    (T0, T0 - 3, T0),  # before the API's time: a stale stamp, the API's
    (None, T0 + 2, T0 + 2),  # the API has none: the operator's
]


@pytest.mark.parametrize(("api", "seen", "want"), SHARPEN)
def test_sharpen(api: float | None, seen: float | None, want: float) -> None:
    assert startup.sharpen(api, seen) == want


def test_seen_stamps_only_transitions_it_watched() -> None:
    fresh = startup.observe_pod(pod_body(scheduled=None, started=None, ready=None))
    s = startup.seen_next(None, fresh, T0 + 0.2)
    assert s.created == T0 + 0.2 and s.scheduled is None
    s = startup.seen_next(s, startup.observe_pod(pod_body(started=None, ready=None)), T0 + 1.3)
    assert s.scheduled == T0 + 1.3
    s = startup.seen_next(s, startup.observe_pod(pod_body()), T0 + 9.05)
    assert (s.started, s.ready) == (T0 + 9.05, T0 + 9.05)
    # a stamp is kept while the state holds
    s2 = startup.seen_next(s, startup.observe_pod(pod_body()), T0 + 50)
    assert s2.ready == T0 + 9.05
    # first seen already Ready (the operator restarted): no stamp at all
    late = startup.seen_next(None, startup.observe_pod(pod_body()), T0 + 100)
    late = startup.seen_next(late, startup.observe_pod(pod_body()), T0 + 101)
    assert (late.created, late.scheduled, late.ready) == (None, None, None)
    # the stamps sharpen the assembled phases
    out = startup.assemble(startup.observe_pod(pod_body()), s, REPORT)
    assert out is not None and out["totalSeconds"] == 8.85  # created T0+0.2 -> seen Ready


# (document, error) -- why
BAD_REPORTS = [
    ([], "not a JSON object"),  # a list
    ({"phases": [{"name": "Compiling", "start": 1, "end": 2}]}, "phases\\[0\\]"),  # unknown
    ({"processStartedAt": "yesterday"}, "processStartedAt is not a number"),
    ({"phases": [{"name": "Loading", "start": True, "end": 2}]}, "start is not a number"),
]


@pytest.mark.parametrize(("doc", "error"), BAD_REPORTS)
def test_parse_report_refuses(doc: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        startup.parse_report(doc)


def test_parse_report_keeps_finished_phases() -> None:
    doc = {"processStartedAt": 1.5, "importedAt": 2, "readyAt": None,
           "phases": [{"name": "Fetching", "start": 2, "end": 2.5},
                      {"name": "Loading", "start": 2.5, "end": None}]}  # fmt: skip
    report = startup.parse_report(doc)
    assert report == startup.RuntimeReport(1.5, 2.0, None, (("Fetching", 2.0, 2.5),))
