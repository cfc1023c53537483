"""Shift calendar: planned time in local time (DST, shifts past midnight), and its config errors."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.config import Calendar, parse_config
from edge_agent.derivation.calendar import ShiftCalendar
from edge_agent.errors import ConfigError

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def cal(**kw) -> ShiftCalendar:
    return ShiftCalendar(Calendar.model_validate({"timezone": "Europe/Berlin", **kw}))


def test_two_shifts_with_breaks_on_weekdays():
    c = cal(shifts=[{"name": "early", "start": "06:00", "end": "14:00", "breaks": [{"start": "09:00", "end": "09:30"}]},
                    {"name": "late", "start": "14:00", "end": "22:00"}])
    monday = (2026, 11, 23)
    assert c.planned(at(*monday, 0), at(*monday, 23, 59)) == (7.5 + 8) * 3600
    assert c.planned(at(*monday, 9, 15), at(*monday, 10)) == 30 * 60
    assert c.planned(at(2026, 11, 28, 0), at(2026, 11, 30, 0)) == 0, "no shift on the weekend"


def test_a_night_shift_runs_past_midnight_and_its_break_after_midnight_counts():
    c = cal(shifts=[{"name": "night", "start": "22:00", "end": "06:00", "days": ["mon"],
                     "breaks": [{"start": "02:00", "end": "02:30"}]}])
    assert c.planned(at(2026, 11, 23, 12), at(2026, 11, 24, 12)) == 7.5 * 3600
    assert c.planned(at(2026, 11, 24, 2), at(2026, 11, 24, 3)) == 30 * 60


def test_daylight_saving_change_makes_a_night_shift_an_hour_shorter():
    c = cal(shifts=[{"name": "night", "start": "22:00", "end": "06:00", "days": ["sat"]}])
    # 2026-03-29: clocks go from 02:00 to 03:00 in Berlin
    assert c.planned(at(2026, 3, 28, 12), at(2026, 3, 29, 12)) == 7 * 3600


def test_no_calendar_is_planned_around_the_clock():
    assert ShiftCalendar(None).planned(100.0, 160.0) == 60.0


def config(machine_extra: dict) -> str:
    return yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"},
        "machines": [{"id": "m1", "signals": {"run": "running"}, **machine_extra}],
        "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1"}],
        "tags": [{"name": "running", "device": "plc", "address": "coil:0", "type": "bool"}],
    }, sort_keys=False)


@pytest.mark.parametrize("extra, message", [
    ({"calendar": {"timezone": "Mars/Olympus", "shifts": [{"name": "a", "start": "06:00", "end": "14:00"}]}},
     "unknown time zone 'Mars/Olympus'"),
    ({"calendar": {"shifts": [{"name": "a", "start": "06:00", "end": "14:00",
                               "breaks": [{"start": "15:00", "end": "15:30"}]}]}},
     "break 15:00-15:30 is not inside shift 'a' (06:00-14:00)"),
    ({"calendar": {"shifts": [{"name": "a", "start": "6 o'clock", "end": "14:00"}]}}, "should match pattern"),
    ({"cycle": {"source": "cycle_counter"}}, "cycle source 'cycle_counter' needs signals.cycle_counter"),
    ({"reasons": {101: "jam"}}, "a reason catalogue needs signals.reason_code or signals.fault_code"),
    ({"state": {"modes": {1: "processing"}}}, "state.modes needs signals.mode"),
    ({"state": {"micro_stop": "soon"}}, "not a duration"),
    ({"signals": {"run": "running", "packml_state": "pack"}}, "machines[0].signals.packml_state: unknown tag 'pack'"),
])
def test_config_errors_name_the_field(extra, message):
    with pytest.raises(ConfigError) as e:
        parse_config(config(extra), "plant.yaml")
    assert any(message in p for p in e.value.problems), e.value.problems
    assert all(p.startswith("plant.yaml:") for p in e.value.problems)


def test_aggregates_also_end_at_shift_start_and_end():
    from derivation_support import machine, of, samples
    from edge_agent.derivation import Deriver

    m = machine(aggregates={"interval": "1h"}, calendar={"timezone": "Europe/Berlin", "shifts": [
        {"name": "early", "start": "06:30", "end": "14:30", "breaks": [{"start": "09:00", "end": "09:30"}]}]})
    d = Deriver(m)
    out = []
    t = at(2026, 11, 23, 5, 50)
    while t < at(2026, 11, 23, 15, 10):
        out += d.step(samples(t, run=True, parts=0)) + d.tick(t + 1)
        t += 60
    aggs = [(datetime.fromisoformat(e.fields["start"]).astimezone(BERLIN).strftime("%H:%M"),
             datetime.fromisoformat(e.fields["end"]).astimezone(BERLIN).strftime("%H:%M"),
             e.fields["reason"], e.fields["planned_time"]) for e in of(out, "aggregate")]
    assert aggs[:3] == [("05:00", "06:00", "interval", 0), ("06:00", "06:30", "shift", 0),
                        ("06:30", "07:00", "interval", 1800)]
    assert ("09:00", "10:00", "interval", 1800) in aggs
    assert aggs[-2:] == [("14:00", "14:30", "shift", 1800), ("14:30", "15:00", "interval", 0)]
    assert sum(a[3] for a in aggs) == 7.5 * 3600
