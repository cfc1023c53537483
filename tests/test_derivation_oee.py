"""The OEE example of issue 5, from a generated sample stream through the real Deriver.

A 480-minute shift with two 15-minute breaks and a 30-minute meal break (420 planned
minutes), 47 minutes of downtime, ideal cycle time 1 s, 19,271 parts of which 423
scrap: availability 88.81 %, performance 86.11 %, quality 97.80 %, OEE 74.79 %.
"""

from __future__ import annotations

from derivation_support import MONDAY, feed, machine, of, samples
from edge_agent.derivation import Deriver

H, M = 3600, 60
SHIFT = {"timezone": "UTC", "shifts": [{"name": "night", "start": "00:00", "end": "08:00", "days": ["mon"],
         "breaks": [{"start": "02:00", "end": "02:15"}, {"start": "04:00", "end": "04:30", "name": "meal"},
                    {"start": "06:00", "end": "06:15"}]}]}
BREAKS = [(2 * H, 2 * H + 15 * M), (4 * H, 4 * H + 30 * M), (6 * H, 6 * H + 15 * M)]
DOWNTIMES = [(1 * H, 1 * H + 20 * M, 101), (3 * H, 3 * H + 15 * M, 205), (5 * H, 5 * H + 12 * M, 101)]  # 47 min
MICRO_STOPS = [(1 * H + 40 * M, 1 * H + 40 * M + 20), (6 * H + 30 * M, 6 * H + 30 * M + 30)]  # shorter than 60 s
PARTS, SCRAP = 19_271, 423


def shift_stream():
    """One sample per second: run bit, fault code, part and scrap counters."""
    def stopped(sec):
        for a, b, code in DOWNTIMES:
            if a <= sec < b:
                return code
        return 0 if any(a <= sec < b for a, b in BREAKS + MICRO_STOPS) else None

    running = [stopped(sec) is None for sec in range(8 * H)]
    run_seconds = sum(running)
    parts = scrap = k = 0
    stream = [("cmd", ({"command": "set_order", "order": "4711", "article": "A-1", "operation": "0010",
                        "ideal_cycle_time": 1.0}, MONDAY))]
    for sec in range(8 * H + 5 * M):
        if sec < 8 * H and running[sec]:
            k += 1
            parts, scrap = PARTS * k // run_seconds, SCRAP * k // run_seconds
        code = stopped(sec) if sec < 8 * H else 0
        stream.append(("step", samples(MONDAY + sec, run=sec < 8 * H and running[sec], fault=code or 0,
                                       parts=parts, scrap=scrap)))
        if sec == 8 * H:
            stream.append(("cmd", ({"command": "set_order", "order": None}, MONDAY + sec)))
        stream.append(("tick", MONDAY + sec + 0.5))
    return stream


def test_the_issue_example_from_a_generated_stream():
    m = machine(signals={"run": "run", "part_counter": "parts", "scrap_counter": "scrap", "reason_code": "fault"},
                reasons={101: "jam", 205: "material_missing"}, calendar=SHIFT,
                state={"micro_stop": "60s"}, aggregates={"interval": "480m"})
    events = feed(Deriver(m), shift_stream())
    [agg] = [e for e in of(events, "aggregate") if e.fields["start"] == "2026-11-23T00:00:00.000Z"]
    f = agg.fields
    assert f["end"] == "2026-11-23T08:00:00.000Z"
    assert f["planned_time"] == 420 * M
    assert f["downtime"] == 47 * M
    assert f["downtime_by_reason"] == {"jam": 32 * M, "material_missing": 15 * M}
    assert f["micro_stop_time"] == 50 and f["micro_stops"] == 2
    assert f["run_time"] == 373 * M and f["not_available_time"] == 0
    assert (f["total"], f["scrap"], f["good"]) == (19_271, 423, 18_848)
    assert f["ideal_cycle_time"] == 1.0 and f["order"]["id"] == "4711"
    pct = {k: round(f[k] * 100, 2) for k in ("availability", "performance", "quality", "oee")}
    assert pct == {"availability": 88.81, "performance": 86.11, "quality": 97.80, "oee": 74.79}

    # the order ran exactly this shift: its summary (what the ERP books) has the same figures
    [summary] = of(events, "order_summary")
    s = summary.fields
    assert s["order"] == {"id": "4711", "article": "A-1", "operation": "0010"}
    assert (s["good"], s["scrap"], s["run_time"], s["downtime"]) == (18_848, 423, 373 * M, 47 * M)
    assert round(s["oee"] * 100, 2) == 74.79

    # downtime events: three opened and closed with their catalogue reasons; breaks are stops, not planned
    closed = [e.fields for e in of(events, "downtime") if e.fields["status"] == "closed"]
    planned = [(d["reason"], d["planned_duration"]) for d in closed if d["planned_duration"]]
    assert planned == [("jam", 20 * M), ("material_missing", 15 * M), ("jam", 12 * M)]
    assert len(of(events, "micro_stop")) == 2
