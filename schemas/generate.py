"""Writes one JSON Schema per event type (schemas/<type>.v1.json): `python schemas/generate.py`.

The envelope is defined once here; tests/test_derivation_schemas.py fails when a file
is out of date or an emitted event does not validate. A change that a v1 consumer
could trip over (a removed or renamed field, a narrower type) needs a v2 schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = 1

TS = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
      "description": "RFC 3339 UTC with milliseconds"}
SECONDS = {"type": "number", "minimum": 0, "description": "seconds, millisecond resolution"}
COUNT = {"type": "integer", "minimum": 0}
RATIO = {"type": ["number", "null"], "minimum": 0, "description": "a fraction (0.8881 = 88.81 %); null when undefined"}
STATES = ["executing", "not_executing", "setup", "out_of_service", "not_available"]
STOPS = ["not_executing", "setup", "out_of_service"]
CODE = {"type": ["integer", "string", "null"], "description": "the PLC's reason/fault code"}


def null(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


ORDER = null({"type": "object", "required": ["id", "article", "operation"], "additionalProperties": False,
              "properties": {"id": {"type": "string"}, "article": {"type": ["string", "null"]},
                             "operation": {"type": ["string", "null"]}}})

ENVELOPE = {
    "schema": None,  # filled per type
    "type": None,
    "event_id": {"type": "string", "minLength": 1, "description": "unique per event; a duplicate delivery repeats it"},
    "seq": {"type": "integer", "minimum": 1, "description": "per agent, gap-free, increasing in commit order"},
    "site": {"type": "string"}, "area": {"type": "string"}, "line": {"type": "string"},
    "machine": {"type": "string"},
    "ts": {**TS, "description": "when the fact happened (not when it was sent)"},
    "order": {**ORDER, "description": "the production order current at ts (for aggregates: of the interval)"},
}
OPTIONAL = {"historical": {"type": "boolean", "description": "sent long after it was stored (replayed backlog)"}}

FIGURES = {
    "planned_time": {**SECONDS, "description": "planned production time per the shift calendar (PBT + not_available)"},
    "run_time": {**SECONDS, "description": "planned time the machine executed, micro-stops included (APT)"},
    "downtime": {**SECONDS, "description": "planned time in downtime (stops at least the micro-stop threshold)"},
    "downtime_by_reason": {"type": "object", "additionalProperties": SECONDS,
                           "description": "reason -> seconds; 'unclassified' when no reason is known yet"},
    "micro_stop_time": {**SECONDS, "description": "planned time in micro-stops (part of run_time)"},
    "micro_stops": COUNT, "downtimes": {**COUNT, "description": "downtimes that started in the interval"},
    "not_available_time": {**SECONDS, "description": "planned time without data (not_available or unobserved)"},
    "total": COUNT, "good": COUNT, "scrap": COUNT, "cycles": COUNT,
    "ideal_cycle_time": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "availability": {**RATIO, "maximum": 1}, "performance": RATIO, "quality": {**RATIO, "maximum": 1},
    "oee": RATIO,
}

DOWNTIME = {
    "downtime_id": {"type": "string", "description": "<machine>-<start epoch ms>: stable, use it to classify"},
    "status": {"enum": ["open", "closed"]},
    "start": TS, "end": null(TS), "duration": null(SECONDS),
    "planned_duration": {**null(SECONDS), "description": "the part inside planned time; null while open"},
    "state": {"enum": STOPS}, "reason": {"type": ["string", "null"]}, "reason_code": CODE,
    "reason_source": {"enum": ["plc", "state", "mes", None]},
}
DOWNTIME_RULES = [{"if": {"properties": {"status": {"const": "open"}}},
                   "then": {"properties": {"end": {"type": "null"}, "duration": {"type": "null"}}},
                   "else": {"properties": {"end": TS, "duration": SECONDS}}}]

TYPES: dict[str, tuple[str, dict, list]] = {
    "state": ("The machine's canonical state changed (after the debounce; ts is when it began).", {
        "state": {"enum": STATES}, "previous": {"enum": [*STATES, None]},
        "mode": {"enum": ["processing", "setup", "maintenance", "none", None]},
        "previous_duration": null(SECONDS),
        "source": {"type": "object", "required": ["signal", "tag", "value"],
                   "properties": {"signal": {"type": "string"}, "tag": {"type": ["string", "null"]}, "value": {},
                                  "values": {"type": "object"}},
                   "description": "the deciding signal, its tag and raw value; "
                                  "values = every state signal's raw value"},
    }, []),
    "count": ("Parts counted in one poll cycle.", {
        "count": {**COUNT, "description": "parts (good + scrap)"}, "good": COUNT, "scrap": COUNT,
        "counter": {"type": ["integer", "null"], "description": "raw value of the primary counter"},
        "tag": {"type": ["string", "null"]},
    }, []),
    "counter_reset": ("A counter dropped (reset) or jumped; nothing phantom was counted.", {
        "signal": {"type": "string"}, "tag": {"type": "string"}, "from": COUNT, "to": COUNT,
        "kind": {"enum": ["reset", "jump"]},
        "counted": {**COUNT, "description": "parts counted as made since a reset to zero"},
    }, []),
    "cycle": ("One or more machine cycles completed.", {
        "cycles": {"type": "integer", "minimum": 1}, "parts": COUNT, "cycle_time": null(SECONDS),
        "source": {"enum": ["cycle_complete", "cycle_counter", "part_counter"]},
        "ideal_cycle_time": {"type": ["number", "null"], "exclusiveMinimum": 0},
    }, []),
    "downtime": ("A downtime opened (ts = start) or closed (ts = end).", DOWNTIME, DOWNTIME_RULES),
    "downtime_update": ("A downtime was classified by the MES (ts = when).", DOWNTIME, DOWNTIME_RULES),
    "micro_stop": ("A stop shorter than the micro-stop threshold (ts = start).", {
        "start": TS, "end": TS, "duration": SECONDS, "state": {"enum": STOPS}, "reason_code": CODE,
    }, []),
    "aggregate": ("Figures of one interval (ts = end): wall-clock aligned, cut at shift start/end and order changes.", {
        "start": TS, "end": TS, "reason": {"enum": ["interval", "shift", "order_change"]}, **FIGURES,
    }, []),
    "order": ("The order context changed (set_order).", {
        "previous_order": ORDER, "ideal_cycle_time": {"type": ["number", "null"]},
        "target_quantity": {"type": ["number", "null"]},
    }, []),
    "order_summary": ("Totals of an order that ended: the confirmation an ERP books (ts = end).", {
        "start": TS, "end": TS, "target_quantity": {"type": ["number", "null"]}, **FIGURES,
    }, []),
}


def schema(event_type: str) -> dict:
    description, fields, rules = TYPES[event_type]
    props = {**ENVELOPE, "schema": {"const": f"edge-agent/{event_type}/v{VERSION}"}, "type": {"const": event_type},
             **fields, **OPTIONAL}
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:edge-agent:schema:{event_type}:v{VERSION}",
        "title": f"edge-agent {event_type} event, v{VERSION}",
        "description": description,
        "type": "object",
        "required": [k for k in props if k not in OPTIONAL],
        "properties": props,
        "additionalProperties": False,
    }
    if rules:
        out["allOf"] = rules
    return out


def render(event_type: str) -> str:
    return json.dumps(schema(event_type), indent=2, ensure_ascii=False) + "\n"


def path(event_type: str) -> Path:
    return HERE / f"{event_type}.v{VERSION}.json"


if __name__ == "__main__":
    for t in TYPES:
        path(t).write_text(render(t), encoding="utf-8")
        print(path(t), file=sys.stderr)
