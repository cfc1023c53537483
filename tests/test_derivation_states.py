"""Machine state rules (table-driven), debounce, micro-stops, not_available and restarts."""

from __future__ import annotations

import json

import pytest

from derivation_support import MONDAY, machine, of, samples
from edge_agent.derivation import Deriver
from edge_agent.derivation.states import StateRules
from edge_agent.model import DeviceStatus, Quality, Sample

@pytest.mark.parametrize("signals, values, state, deciding", [
    ({"run": "run"}, {"run": True}, "executing", "run"),
    ({"run": "run"}, {"run": 0}, "not_executing", "run"),
    ({"run": "run"}, {}, "not_available", "connection"),
    ({"run": "run", "fault": "fault"}, {"run": True, "fault": True}, "out_of_service", "fault"),
    ({"run": "run", "fault_code": "code"}, {"run": True, "fault_code": 205}, "out_of_service", "fault_code"),
    ({"run": "run", "fault_code": "code"}, {"run": True, "fault_code": 0}, "executing", "run"),
    ({"run": "run", "setup": "setup"}, {"run": True, "setup": True}, "setup", "setup"),
    ({"run": "run", "mode": "mode"}, {"run": True, "mode": 2}, "setup", "mode"),
    ({"run": "run", "mode": "mode"}, {"run": True, "mode": "3"}, "out_of_service", "mode"),
    ({"run": "run", "mode": "mode", "fault": "f"}, {"run": False, "mode": 2, "fault": True}, "out_of_service", "fault"),
    ({"packml_state": "packml"}, {"packml_state": 6}, "executing", "packml_state"),
    ({"packml_state": "packml"}, {"packml_state": "Execute"}, "executing", "packml_state"),
    ({"packml_state": "packml"}, {"packml_state": 9}, "out_of_service", "packml_state"),  # Aborted
    ({"packml_state": "packml"}, {"packml_state": 5}, "not_executing", "packml_state"),  # Suspended
    ({"packml_state": "packml"}, {"packml_state": 11}, "out_of_service", "packml_state"),  # Held, overridden
    ({"packml_state": "packml"}, {"packml_state": 42}, "not_available", "packml_state"),
    ({"execution": "exe"}, {"execution": "ACTIVE"}, "executing", "execution"),
    ({"execution": "exe"}, {"execution": "feed_hold"}, "not_executing", "execution"),
    ({"execution": "exe"}, {"execution": "UNAVAILABLE"}, "not_available", "execution"),
    ({"execution": "exe"}, {"execution": "SETUP_PROG"}, "setup", "execution"),  # a site-specific value
])
def test_rules(signals, values, state, deciding):
    m = machine(signals=signals, state={"modes": {1: "processing", 2: "setup", "3": "maintenance"},
                                        "packml": {"Held": "out_of_service"},
                                        "execution": {"setup_prog": "setup"}})
    v = StateRules(m).evaluate(values, None)
    assert (v.state, v.source["signal"]) == (state, deciding)
    if deciding in values:
        assert v.source["value"] == values[deciding], "the raw source value is kept"


def test_mode_is_reported_with_the_state():
    m = machine(signals={"run": "run", "mode": "mode"}, state={"modes": {1: "processing", 2: "setup"}})
    d = Deriver(m)
    [e] = d.step(samples(MONDAY, run=True, mode=1))
    assert (e.fields["state"], e.fields["mode"]) == ("executing", "processing")
    out = d.step(samples(MONDAY + 1, run=True, mode=2))
    [e] = of(out, "state")
    assert (e.fields["state"], e.fields["mode"], e.fields["previous"]) == ("setup", "setup", "executing")
    [dt] = of(out, "downtime")
    assert (dt.fields["reason"], dt.fields["reason_source"]) == ("setup", "state")


def test_debounce_absorbs_flicker_and_dates_a_state_from_its_start():
    d = Deriver(machine(state={"debounce": "2s"}))
    assert [e.fields["state"] for e in d.step(samples(MONDAY, run=True))] == ["executing"]
    assert d.step(samples(MONDAY + 10, run=False)) == []
    assert d.step(samples(MONDAY + 11, run=True)) == [], "a 1 s flicker is absorbed"
    assert d.step(samples(MONDAY + 20, run=False)) == []
    assert d.tick(MONDAY + 21.9) == []
    [e] = of(d.tick(MONDAY + 22), "state")
    assert (e.fields["state"], e.ts, e.fields["previous_duration"]) == ("not_executing", MONDAY + 20, 20.0)


def test_short_stop_is_a_micro_stop_and_a_long_one_downtime_reported_at_start_and_end():
    d = Deriver(machine(signals={"run": "run", "fault_code": "code"}, state={"micro_stop": "30s"},
                        reasons={7: "jam"}))
    d.step(samples(MONDAY, run=True, code=0))
    d.step(samples(MONDAY + 10, run=False, code=7))
    out = d.step(samples(MONDAY + 20, run=True, code=0))
    [micro] = of(out, "micro_stop")
    assert (micro.fields["duration"], micro.fields["reason_code"]) == (10.0, 7)
    assert not of(out, "downtime")
    d.step(samples(MONDAY + 100, run=False, code=7))
    assert not of(d.tick(MONDAY + 129.9), "downtime")
    [opened] = of(d.tick(MONDAY + 130), "downtime")
    assert opened.ts == MONDAY + 100
    assert (opened.fields["status"], opened.fields["end"], opened.fields["reason"]) == ("open", None, "jam")
    [closed] = of(d.step(samples(MONDAY + 160, run=True, code=0)), "downtime")
    assert closed.fields["downtime_id"] == opened.fields["downtime_id"]
    assert (closed.fields["status"], closed.fields["duration"], closed.ts) == ("closed", 60.0, MONDAY + 160)


def test_device_away_is_not_available_and_never_downtime():
    d = Deriver(machine(state={"micro_stop": "5s"}, aggregates={"interval": "1m"}))
    d.step(samples(MONDAY, run=True))
    [e] = d.step([DeviceStatus("plc", False, MONDAY + 10, "connection refused")])
    assert e.fields["state"] == "not_available"
    assert e.fields["source"]["value"] == "plc: connection refused"
    out = d.tick(MONDAY + 50)
    out += d.step([DeviceStatus("plc", True, MONDAY + 50)])
    assert not of(out, "state"), "connected again, but the state is known only with the next sample"
    out += d.step(samples(MONDAY + 50.5, run=True)) + d.tick(MONDAY + 61)
    assert not of(out, "downtime")
    [agg] = of(out, "aggregate")
    assert (agg.fields["run_time"], agg.fields["downtime"], agg.fields["not_available_time"]) == (19.5, 0, 40.5)
    assert agg.fields["availability"] == 1.0


def test_bad_quality_run_bit_is_not_available():
    d = Deriver(machine())
    d.step(samples(MONDAY, run=True))
    [e] = d.step([Sample("run", None, MONDAY + 1, Quality.BAD, "illegal address")])
    assert (e.fields["state"], e.fields["source"]["value"]) == ("not_available", "run: illegal address")


def test_a_short_restart_continues_and_a_long_one_is_not_available():
    m = machine(state={"restart_gap": "60s"})
    d = Deriver(m)
    d.step(samples(MONDAY, run=True, parts=10))
    snap = json.loads(json.dumps(d.snapshot()))
    short = Deriver(m, snap).step(samples(MONDAY + 5, run=True, parts=12))
    assert not of(short, "state") and of(short, "count")[0].fields["count"] == 2
    long = Deriver(m, snap).step(samples(MONDAY + 600, run=True, parts=500))
    states = [(e.ts, e.fields["state"], e.fields["source"]["signal"]) for e in of(long, "state")]
    assert states == [(MONDAY, "not_available", "agent"), (MONDAY + 600, "executing", "run")]
    assert of(long, "count")[0].fields["count"] == 490, "parts made while the agent was down are counted"
