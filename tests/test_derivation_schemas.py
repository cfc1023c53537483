"""Every event type the deriver emits validates against its JSON Schema in schemas/, as published."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from derivation_support import MONDAY, of, samples
from edge_agent.config import parse_config
from edge_agent.derivation import EVENT_TYPES, Deriver
from edge_agent.events import envelope, schema_id
from edge_agent.model import DeviceStatus

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("schema_generator", ROOT / "schemas" / "generate.py")
generator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generator)

CONFIG = {
    "plant": {"site": "s1", "area": "a1", "line": "l1"},
    "machines": [{
        "id": "m1",
        "signals": {"run": "running", "part_counter": "parts", "scrap_counter": "scrap", "fault_code": "fault"},
        "state": {"debounce": "1s", "micro_stop": "5s"}, "reasons": {101: "jam"},
        "ideal_cycle_time": 1.0, "aggregates": {"interval": "1m"},
    }],
    "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1"}],
    "tags": [{"name": "running", "device": "plc", "address": "coil:0", "type": "bool"},
             {"name": "parts", "device": "plc", "address": "hr:0", "type": "uint32"},
             {"name": "scrap", "device": "plc", "address": "hr:2", "type": "uint32"},
             {"name": "fault", "device": "plc", "address": "hr:4", "type": "uint16"}],
}


def every_kind_of_event():
    """A scripted hour of a machine that produces every event type at least once."""
    cfg = parse_config(yaml.safe_dump(CONFIG))
    d = Deriver(cfg.machines[0])
    out = d.command({"command": "set_order", "order": "4711", "article": "A-1", "ideal_cycle_time": 0.9}, MONDAY)
    parts = scrap = 0

    def plc(t, run, fault=0):
        return d.step(samples(MONDAY + t, running=run, parts=parts, scrap=scrap, fault=fault))

    for t in range(0, 200):
        running = not (50 <= t < 53 or 80 <= t < 110)  # a 3 s micro-stop, a 30 s downtime
        if running:
            parts += 1
            scrap += t % 17 == 0
        out += plc(t, running, fault=101 if 80 <= t < 110 else 0)
        out += d.tick(MONDAY + t + 0.5)
    down = of(out, "downtime")[0].fields["downtime_id"]
    out += d.command({"command": "set_downtime_reason", "downtime_id": down, "reason": "tool_change"}, MONDAY + 200)
    stored = [(str(uuid.uuid4()), e) for e in out]
    d.remember_event_ids(stored)
    event_id = next(eid for eid, e in stored if e.type == "downtime")
    out += d.command({"command": "set_downtime_reason", "event_id": event_id, "reason_code": 101}, MONDAY + 201)
    parts = 3  # PLC restart: counter reset
    out += plc(202, True)
    out += d.step([DeviceStatus("plc", False, MONDAY + 205, "timeout")])
    out += d.tick(MONDAY + 210)
    out += d.command({"command": "set_order", "order": "4712"}, MONDAY + 230)
    out += d.tick(MONDAY + 300)
    return cfg, out


def published(cfg, events):
    """What a subscriber receives: the envelope plus event_id and seq (as the buffer adds them)."""
    return [{"event_id": str(uuid.uuid4()), "seq": i + 1, **envelope(cfg, e)} for i, e in enumerate(events)]


def schema_for(event_type: str) -> dict:
    return json.loads(generator.path(event_type).read_text(encoding="utf-8"))


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_file_is_current_and_valid(event_type):
    assert generator.path(event_type).read_text(encoding="utf-8") == generator.render(event_type), \
        "run `python schemas/generate.py`"
    s = schema_for(event_type)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["properties"]["schema"]["const"] == schema_id(event_type)


def test_every_emitted_event_validates_and_every_type_is_emitted():
    cfg, events = every_kind_of_event()
    payloads = published(cfg, events)
    assert {p["type"] for p in payloads} == set(EVENT_TYPES)
    assert set(generator.TYPES) == set(EVENT_TYPES)
    validators = {t: jsonschema.Draft202012Validator(schema_for(t), format_checker=jsonschema.FormatChecker())
                  for t in EVENT_TYPES}
    for p in payloads:
        errors = sorted(validators[p["type"]].iter_errors(json.loads(json.dumps(p))), key=str)
        assert not errors, f"{p['type']}: {errors[0].message} in {p}"


def test_schemas_reject_what_they_should():
    cfg, events = every_kind_of_event()
    p = published(cfg, of(events, "downtime"))[0]
    v = jsonschema.Draft202012Validator(schema_for("downtime"))
    assert not list(v.iter_errors(p))
    assert list(v.iter_errors({**p, "status": "closed", "end": None})), "a closed downtime needs an end"
    assert list(v.iter_errors({**p, "reason_sorce": "plc"})), "unknown fields are rejected"
    assert list(v.iter_errors({k: x for k, x in p.items() if k != "downtime_id"}))
