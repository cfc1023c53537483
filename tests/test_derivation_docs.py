"""docs/events.md does not drift: its payload examples validate, its config example loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from edge_agent.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
ENVELOPE = {"event_id": "e", "seq": 1, "site": "s1", "area": "a1", "line": "l1", "machine": "m1",
            "ts": "2026-11-23T00:00:00.000Z", "order": None}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_every_payload_example_validates_against_its_schema():
    examples = []
    for block in blocks("json"):
        for obj in re.findall(r"^\{.*?\}$", block, flags=re.S | re.M):
            examples.append(json.loads(obj))
    payloads = [e for e in examples if "type" in e and "event_id" not in e]  # not the envelope sketch
    assert {p["type"] for p in payloads} >= {"state", "count", "counter_reset", "cycle", "downtime", "micro_stop",
                                             "aggregate", "order", "order_summary"}
    for p in payloads:
        full = {**ENVELOPE, "schema": f"edge-agent/{p['type']}/v1", **p}
        schema = json.loads((ROOT / "schemas" / f"{p['type']}.v1.json").read_text(encoding="utf-8"))
        jsonschema.validate(full, schema, format_checker=jsonschema.FormatChecker())


def test_the_config_example_loads():
    [example] = [b for b in blocks("yaml") if "machines:" in b]
    machines = yaml.safe_load(example)["machines"]
    tags = sorted({t for m in machines for t in m["signals"].values()})
    cfg = {
        "plant": {"site": "s", "area": "a", "line": "l"}, "machines": machines,
        "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1"}],
        "tags": [{"name": t, "device": "plc", "address": f"hr:{i * 2}", "type": "uint16"} for i, t in enumerate(tags)],
    }
    parsed = parse_config(yaml.safe_dump(cfg), "docs/events.md")
    m = parsed.machines[0]
    assert (m.state.micro_stop, m.ideal_cycle_time, m.reasons[101]) == (120.0, 1.2, "jam")
    assert m.calendar.shifts[1].days == ["mon", "tue", "wed", "thu", "fri"]
