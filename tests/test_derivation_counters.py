"""Counters (wrap, reset, jump, good/scrap, restart) and cycles (bit edge, cycle counter, part counter)."""

from __future__ import annotations

import json

import pytest

from derivation_support import MONDAY, machine, of, samples
from edge_agent.derivation import Deriver
from edge_agent.derivation.counters import counter_delta
from edge_agent.model import DeviceStatus

M16 = 2**16


@pytest.mark.parametrize("last, raw, expected", [
    (10, 10, (0, "same")),
    (10, 13, (3, "count")),
    (65530, 4, (10, "wrap")),          # 16-bit wrap: 65530 -> 65535 -> 0 -> 4
    (5000, 3, (3, "reset")),           # reset to zero, 3 made since
    (5000, 900, (0, "reset")),         # a drop to a value no reset-to-zero explains: nothing counted
    (10, 5000, (0, "jump")),           # preset / swapped PLC: re-based, not counted
])
def test_counter_delta(last, raw, expected):
    assert counter_delta(last, raw, M16, max_step=100) == expected


def test_32_bit_counter_wraps_in_the_deriver_and_a_restart_continues_from_the_persisted_raw_value():
    d = Deriver(machine())
    out = d.step(samples(MONDAY, run=True, parts=2**32 - 2))
    out += d.step(samples(MONDAY + 1, run=True, parts=1))
    assert [e.fields["count"] for e in of(out, "count")] == [3]
    d = Deriver(d.machine, json.loads(json.dumps(d.snapshot())))
    out = d.step(samples(MONDAY + 2, run=True, parts=1)) + d.step(samples(MONDAY + 3, run=True, parts=6))
    assert [e.fields["count"] for e in of(out, "count")] == [5], "no double count, nothing lost"


def test_good_plus_scrap_counters():
    d = Deriver(machine(signals={"run": "run", "good_counter": "good", "scrap_counter": "scrap"}))
    d.step(samples(MONDAY, run=True, good=100, scrap=7))
    [c] = of(d.step(samples(MONDAY + 1, run=True, good=104, scrap=9)), "count")
    assert (c.fields["count"], c.fields["good"], c.fields["scrap"]) == (6, 4, 2)


def test_scrap_seen_before_the_total_that_contains_it_is_never_negative_good():
    d = Deriver(machine(signals={"run": "run", "part_counter": "parts", "scrap_counter": "scrap"}))
    d.step(samples(MONDAY, run=True, parts=10, scrap=0))
    [c1] = of(d.step(samples(MONDAY + 1, run=True, parts=10, scrap=1)), "count")
    [c2] = of(d.step(samples(MONDAY + 2, run=True, parts=12, scrap=1)), "count")
    assert (c1.fields["good"], c1.fields["scrap"]) == (0, 1)
    assert (c2.fields["count"], c2.fields["good"]) == (2, 1)


def test_cycles_from_a_cycle_complete_bit_edge_with_parts_and_ideal_cycle_time():
    d = Deriver(machine(signals={"run": "run", "part_counter": "parts", "cycle_complete": "done"},
                        ideal_cycle_time=1.5))
    out = []
    for i, (bit, parts) in enumerate([(False, 0), (True, 2), (True, 2), (False, 2), (True, 4), (False, 4)]):
        out += d.step(samples(MONDAY + i, run=True, parts=parts, done=bit))
    cycles = [(e.ts - MONDAY, e.fields["parts"], e.fields["cycle_time"], e.fields["ideal_cycle_time"])
              for e in of(out, "cycle")]
    assert cycles == [(1, 2, None, 1.5), (4, 2, 3.0, 1.5)]


def test_cycle_counter_and_no_cycle_time_across_a_lost_connection():
    d = Deriver(machine(signals={"run": "run", "cycle_counter": "cyc"}, cycle={"parts_per_cycle": 4}))
    out = d.step(samples(MONDAY, run=True, cyc=7)) + d.step(samples(MONDAY + 2, run=True, cyc=8))
    out += d.step(samples(MONDAY + 3, run=True, cyc=10))
    out += d.step([DeviceStatus("plc", False, MONDAY + 4)])
    out += d.step(samples(MONDAY + 10, run=True, cyc=11))
    assert [(e.fields["cycles"], e.fields["parts"], e.fields["cycle_time"]) for e in of(out, "cycle")] == \
        [(1, 4, None), (2, 8, 0.5), (1, 4, None)]


def test_part_counter_increase_of_several_parts_is_several_cycles():
    d = Deriver(machine())
    out = d.step(samples(MONDAY, run=True, parts=0)) + d.step(samples(MONDAY + 1, run=True, parts=1))
    out += d.step(samples(MONDAY + 5, run=True, parts=5))
    assert [(e.fields["cycles"], e.fields["parts"], e.fields["cycle_time"]) for e in of(out, "cycle")] == \
        [(1, 1, None), (4, 4, 1.0)]


def test_after_a_long_agent_outage_one_aggregate_covers_the_gap():
    m = machine(aggregates={"interval": "1m"})
    d = Deriver(m)
    d.step(samples(MONDAY, run=True, parts=0))
    d = Deriver(m, json.loads(json.dumps(d.snapshot())))
    out = d.step(samples(MONDAY + 3 * 86400 + 30, run=True, parts=50))
    aggs = of(out, "aggregate")
    assert len(aggs) == 1
    assert (aggs[0].fields["start"], aggs[0].fields["end"]) == ("2026-11-23T00:00:00.000Z", "2026-11-26T00:00:00.000Z")
    assert aggs[0].fields["not_available_time"] == 3 * 86400 and aggs[0].fields["total"] == 0
