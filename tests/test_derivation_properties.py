"""Property-based tests over random sample streams (hypothesis).

- every second of observed time is in exactly one state, and every stop second is
  either micro-stop or downtime: state events, micro-stop/downtime events and the
  aggregates all tell the same story, with no gap and no overlap;
- counts are conserved across 16-bit wraps, counter resets and agent restarts;
- replaying the same input gives the same events, with or without restarts in between.
"""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivation_support import MONDAY, machine, of
from edge_agent.derivation import Deriver
from edge_agent.model import DeviceStatus, Sample

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 0.01  # seconds: every duration on the wire is rounded to the millisecond


def epoch(rfc: str) -> float:
    return datetime.fromisoformat(rfc.replace("Z", "+00:00")).timestamp()


def restart(d: Deriver) -> Deriver:
    """What the daemon does after a restart: a new deriver from the persisted (JSON) snapshot."""
    return Deriver(d.machine, json.loads(json.dumps(d.snapshot())))


# one poll: seconds since the previous one, run bit, fault code, device lost, tick after it
poll = st.tuples(st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 7.0, 31.0]), st.booleans(),
                 st.sampled_from([0, 0, 0, 101]), st.integers(0, 30), st.booleans())


def state_stream(polls):
    t, out = MONDAY + 17.3, []
    for dt, run, fault, lost, tick in polls:
        t += dt
        if lost == 0:
            out.append(("step", [DeviceStatus("plc", False, t, "timeout")]))
        else:
            out.append(("step", [Sample("run", run, t), Sample("fault", fault, t)]))
        if tick:
            out.append(("tick", t + dt / 2))
    return out, t


@SETTINGS
@given(polls=st.lists(poll, min_size=1, max_size=120), debounce=st.sampled_from([0, 0.5, 2]),
       micro=st.sampled_from([0, 4, 20]))
def test_state_time_adds_up_without_gaps_or_overlaps(polls, debounce, micro):
    m = machine(signals={"run": "run", "fault_code": "fault"}, aggregates={"interval": "1m"},
                state={"debounce": debounce, "micro_stop": micro})
    d = Deriver(m)
    stream, t_last = state_stream(polls)
    events = []
    for kind, arg in stream:
        events += d.step(arg) if kind == "step" else d.tick(arg)
    events += d.tick(t_last + 200)  # long enough to classify and close everything

    aggs = [e.fields for e in of(events, "aggregate")]
    assert aggs, "intervals must close"
    for a, b in zip(aggs, aggs[1:]):
        assert a["end"] == b["start"], "aggregates must tile time"
    t0, t_end = epoch(aggs[0]["start"]), epoch(aggs[-1]["end"])
    for a in aggs:
        assert abs(a["planned_time"] - (epoch(a["end"]) - epoch(a["start"]))) < TOL
        assert a["not_available_time"] >= 0
        assert abs(a["run_time"] + a["downtime"] + a["not_available_time"] - a["planned_time"]) < TOL

    states = [e for e in of(events, "state")]
    assert states[0].fields["previous"] is None
    for a, b in zip(states, states[1:]):
        assert b.fields["previous"] == a.fields["state"]
        assert b.ts >= a.ts
        assert abs(b.fields["previous_duration"] - (b.ts - a.ts)) < TOL

    def clipped(a, b):
        return max(0.0, min(b, t_end) - max(a, t0))

    spans = [(e.ts, nxt.ts if nxt else t_end, e.fields["state"]) for e, nxt in zip(states, states[1:] + [None])]
    executing = sum(clipped(a, b) for a, b, s in spans if s == "executing")
    stopped = sum(clipped(a, b) for a, b, s in spans if s in ("not_executing", "out_of_service", "setup"))
    micro_time = sum(clipped(epoch(e.fields["start"]), epoch(e.fields["end"])) for e in of(events, "micro_stop"))
    closed = {e.fields["downtime_id"]: e.fields for e in of(events, "downtime") if e.fields["status"] == "closed"}
    opened = {e.fields["downtime_id"]: e.fields for e in of(events, "downtime") if e.fields["status"] == "open"}
    assert set(closed) <= set(opened), "a downtime is reported when it starts and again when it ends"
    down_time = sum(clipped(epoch(f["start"]), epoch(closed[i]["end"]) if i in closed else t_end)
                    for i, f in opened.items())
    if micro:
        assert all(e.fields["duration"] < micro for e in of(events, "micro_stop"))
        # a stop that turned into downtime lasted at least the threshold (a change of stop state, e.g.
        # fault -> idle, splits it into back-to-back downtimes with their own reasons)
        ends = {f["end"] for f in closed.values()}
        for f in closed.values():
            if f["start"] not in ends:
                chain, total, seen = f, 0.0, set()
                while chain and chain["downtime_id"] not in seen:  # zero-length links exist (clamped time)
                    seen.add(chain["downtime_id"])
                    total += chain["duration"]
                    chain = next((g for g in closed.values()
                                  if g["start"] == chain["end"] and g["downtime_id"] not in seen), None)
                assert total >= micro - TOL
    else:
        assert not of(events, "micro_stop")
    # every stop second is exactly one of micro-stop or downtime
    assert abs(stopped - micro_time - down_time) < TOL * (1 + len(states))
    assert abs(sum(a["run_time"] for a in aggs) - (executing + micro_time)) < TOL * (1 + len(states))
    assert abs(sum(a["downtime"] for a in aggs) - down_time) < TOL * (1 + len(states))
    assert abs(sum(a["micro_stop_time"] for a in aggs) - micro_time) < TOL * (1 + len(states))


# one poll of a counting machine: parts made since the last poll, of which scrap; a PLC reset before it;
# an agent restart before it
production = st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans(), st.booleans())


near_top = st.one_of(st.integers(65535 - 400, 65535), st.integers(0, 65535))  # so that most examples wrap


@SETTINGS
@given(start=near_top, start_scrap=near_top,
       polls=st.lists(production, min_size=1, max_size=200), resets_allowed=st.booleans(),
       good_and_scrap=st.booleans())
def test_counts_are_conserved_across_wraps_resets_and_restarts(start, start_scrap, polls, resets_allowed,
                                                               good_and_scrap):
    width, max_step = 16, 50
    signals = ({"run": "run", "good_counter": "good", "scrap_counter": "scrap"} if good_and_scrap
               else {"run": "run", "part_counter": "parts", "scrap_counter": "scrap"})
    m = machine(signals=signals, counters={"width": width, "max_step": max_step})
    modulus = 2**width
    d = Deriver(m)
    main, scrap_raw = start, start_scrap  # part (or good) counter, scrap counter, as the PLC holds them
    made = scrapped = resets = 0
    events = []
    t = MONDAY
    for i, (parts, scrap, reset, restart_before) in enumerate(polls):
        if i and restart_before:
            d = restart(d)
        main_step = parts - min(scrap, parts) if good_and_scrap else parts
        scrap = min(scrap, parts)
        if i and reset and resets_allowed:
            # the PLC zeroes its counters. A reset shows only as a drop below the old value, and one from
            # just below the top of the range cannot be told from a wrap (hence Counters.max_step).
            if 0 < main < modulus - max_step:
                main, main_step, resets = 0, min(main_step, main - 1), resets + 1
            if 0 < scrap_raw < modulus - max_step:
                scrap_raw, scrap, resets = 0, min(scrap, scrap_raw - 1), resets + 1
            if not good_and_scrap:
                scrap = min(scrap, main_step)
        main = (main + main_step) % modulus
        scrap_raw = (scrap_raw + scrap) % modulus
        if i:  # the first poll is the baseline
            made += main_step + scrap if good_and_scrap else main_step
            scrapped += scrap
        t += 0.5
        tags = {"good": main} if good_and_scrap else {"parts": main}
        events += d.step([Sample(tag, v, t) for tag, v in {**tags, "scrap": scrap_raw, "run": True}.items()])
    counts = of(events, "count")
    assert all(min(e.fields["count"], e.fields["good"], e.fields["scrap"]) >= 0 for e in counts)
    assert sum(e.fields["count"] for e in counts) == made
    assert sum(e.fields["scrap"] for e in counts) == scrapped
    assert sum(e.fields["good"] for e in counts) == made - scrapped
    assert len(of(events, "counter_reset")) == resets


stream_item = st.one_of(
    st.tuples(st.just("poll"), st.sampled_from([0.25, 1.0, 5.0]), st.booleans(), st.sampled_from([0, 0, 7]),
              st.integers(0, 3)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 30.0])),
    st.tuples(st.just("lost"), st.just(0.5)),
    st.tuples(st.just("order"), st.sampled_from(["A", "B", None])),
)


def mixed_stream(items):
    t, parts, out = MONDAY + 3.0, 0, []
    for item in items:
        if item[0] == "poll":
            _, dt, run, fault, made = item
            t += dt
            parts += made if run else 0
            out.append(("step", [Sample("run", run, t), Sample("fault", fault, t), Sample("parts", parts, t)]))
        elif item[0] == "tick":
            t += item[1]
            out.append(("tick", t))
        elif item[0] == "lost":
            t += item[1]
            out.append(("step", [DeviceStatus("plc", False, t, "timeout")]))
        else:
            out.append(("cmd", ({"command": "set_order", "order": item[1], "ideal_cycle_time": 1.5}, t)))
    return out


@SETTINGS
@given(items=st.lists(stream_item, min_size=1, max_size=80), restarts=st.sets(st.integers(0, 80)),
       debounce=st.sampled_from([0, 1]), micro=st.sampled_from([0, 3]))
def test_replay_yields_the_same_events_even_across_restarts(items, restarts, debounce, micro):
    m = machine(signals={"run": "run", "fault_code": "fault", "part_counter": "parts"},
                state={"debounce": debounce, "micro_stop": micro}, aggregates={"interval": "10s"},
                reasons={7: "jam"})
    stream = mixed_stream(items)

    def run(with_restarts: bool):
        d, out = Deriver(m), []
        for i, (kind, arg) in enumerate(stream):
            if with_restarts and i in restarts:
                d = restart(d)
            if kind == "step":
                out += d.step(arg)
            elif kind == "tick":
                out += d.tick(arg)
            else:
                out += d.command(*arg)
        return out

    first = run(False)
    assert run(False) == first
    assert run(True) == first
