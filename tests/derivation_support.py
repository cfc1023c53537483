"""Helpers for the derivation tests: machines from plain dicts, sample streams, event filters."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from edge_agent.config import Machine
from edge_agent.derivation import Deriver
from edge_agent.model import Event, Sample

MONDAY = datetime(2026, 11, 23, tzinfo=timezone.utc).timestamp()  # a Monday, 00:00 UTC


def machine(**fields: Any) -> Machine:
    base: dict[str, Any] = {"id": "m1", "signals": {"run": "run", "part_counter": "parts"}}
    base.update(fields)
    return Machine.model_validate(base)


def samples(ts: float, **values: Any) -> list[Sample]:
    return [Sample(tag, value, ts) for tag, value in values.items()]


def of(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if e.type == type_]


def feed(d: Deriver, stream: list[tuple[str, Any]]) -> list[Event]:
    """Run ('step', items) / ('tick', now) / ('cmd', (cmd, now)) entries through a deriver."""
    out: list[Event] = []
    for kind, arg in stream:
        if kind == "step":
            out += d.step(arg)
        elif kind == "tick":
            out += d.tick(arg)
        else:
            out += d.command(*arg)
    return out
