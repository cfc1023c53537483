"""Order context (BDE) and downtime classification: the MES/CLI commands."""

from __future__ import annotations

import uuid

import pytest

from derivation_support import MONDAY, machine, of, samples
from edge_agent.derivation import Deriver


def running(d: Deriver, t0: float, seconds: int, parts0: int = 0) -> list:
    out = []
    for i in range(seconds):
        out += d.step(samples(t0 + i, run=True, parts=parts0 + i))
    return out


def test_every_event_carries_the_order_and_a_change_closes_the_aggregate_with_a_summary():
    d = Deriver(machine(ideal_cycle_time=2.0, aggregates={"interval": "15m"}))
    out = d.command({"command": "set_order", "order": "4711", "article": "A-1", "operation": "0010",
                     "ideal_cycle_time": 1.0, "target_quantity": 500}, MONDAY)
    out += running(d, MONDAY, 100)
    assert {e.fields["order"]["id"] for e in out} == {"4711"}
    change = d.command({"command": "set_order", "order": "4712", "article": "B-7"}, MONDAY + 100)
    [order] = of(change, "order")
    assert (order.fields["order"]["id"], order.fields["previous_order"]["id"]) == ("4712", "4711")
    assert order.fields["ideal_cycle_time"] == 2.0, "no ideal cycle time in the order: the machine's"
    [agg] = of(change, "aggregate")
    assert (agg.fields["reason"], agg.fields["order"]["id"], agg.fields["total"]) == ("order_change", "4711", 99)
    assert agg.fields["ideal_cycle_time"] == 1.0
    [summary] = of(change, "order_summary")
    f = summary.fields
    assert (f["order"]["id"], f["good"], f["scrap"], f["target_quantity"]) == ("4711", 99, 0, 500)
    assert (f["start"], f["end"]) == ("2026-11-23T00:00:00.000Z", "2026-11-23T00:01:40.000Z")
    after = running(d, MONDAY + 100, 5, parts0=100)
    assert {e.fields["order"]["id"] for e in after} == {"4712"}


def test_a_repeated_set_order_changes_nothing():
    d = Deriver(machine())
    d.command({"command": "set_order", "order": "4711"}, MONDAY)
    assert d.command({"command": "set_order", "order": "4711"}, MONDAY + 5) == []


def test_an_order_summary_spans_several_intervals_and_waits_for_the_last():
    d = Deriver(machine(aggregates={"interval": "1m"}))
    d.command({"command": "set_order", "order": "4711"}, MONDAY)
    out = running(d, MONDAY, 150)
    assert len(of(out, "aggregate")) == 2 and not of(out, "order_summary")
    out = d.command({"command": "set_order", "order": None}, MONDAY + 150)
    [summary] = of(out, "order_summary")
    assert (summary.fields["total"], summary.fields["planned_time"], summary.fields["run_time"]) == (149, 150, 150)


def test_downtime_classified_by_downtime_id_or_event_id_produces_an_update():
    d = Deriver(machine(signals={"run": "run", "fault_code": "code"}, reasons={3: "material_missing"}))
    d.step(samples(MONDAY, run=True, code=0))
    [opened] = of(d.step(samples(MONDAY + 10, run=False, code=0)), "downtime")
    downtime_id = opened.fields["downtime_id"]
    assert downtime_id == "m1-1795392010000" and opened.fields["reason"] is None
    [upd] = d.command({"command": "set_downtime_reason", "downtime_id": downtime_id, "reason": "no_operator"},
                      MONDAY + 20)
    assert (upd.type, upd.fields["status"], upd.fields["reason"], upd.fields["reason_source"]) == \
        ("downtime_update", "open", "no_operator", "mes")
    [closed] = of(d.step(samples(MONDAY + 30, run=True, code=0)), "downtime")
    assert closed.fields["reason"] == "no_operator", "the MES reason sticks to the downtime"
    event_id = str(uuid.uuid4())  # what the buffer gave the closing event
    d.remember_event_ids([(event_id, closed)])
    d = Deriver(d.machine, d.snapshot())  # and it survives a restart
    [upd] = d.command({"command": "set_downtime_reason", "event_id": event_id, "reason_code": 3}, MONDAY + 40)
    assert (upd.fields["downtime_id"], upd.fields["reason"], upd.fields["reason_code"]) == \
        (downtime_id, "material_missing", 3)
    agg = of(d.tick(MONDAY + 901), "aggregate")[0]
    assert agg.fields["downtime_by_reason"] == {"material_missing": 20.0}


@pytest.mark.parametrize("cmd, message", [
    ({"command": "start_rocket"}, "unknown command 'start_rocket'"),
    ({}, "unknown command None"),
    ({"command": "set_order", "order": "1", "ideal_cycle_time": -1}, "ideal_cycle_time must be a positive number"),
    ({"command": "set_order", "order": "1", "article": ["x"]}, "article must be a string"),
    ({"command": "set_order", "order": "1", "qty": 5}, "unknown field(s) ['qty']"),
    ({"command": "set_downtime_reason", "reason": "x"}, "give downtime_id (or the event_id"),
    ({"command": "set_downtime_reason", "downtime_id": "m1-1", "reason": "x"}, "no downtime 'm1-1'"),
    ({"command": "set_downtime_reason", "downtime_id": "m1-1", "reason": ""}, "reason must be a non-empty string"),
    ({"command": "set_downtime_reason", "downtime_id": "m1-1", "reason_code": 99}, "not in the reason catalogue"),
])
def test_bad_commands_are_rejected_with_a_clear_message_and_change_nothing(cmd, message):
    d = Deriver(machine(reasons={3: "jam"}))
    d.step(samples(MONDAY, run=True, parts=0))
    before = d.snapshot()
    with pytest.raises(ValueError) as e:
        d.command(cmd, MONDAY + 1000)
    assert message in str(e.value)
    assert d.snapshot() == before
