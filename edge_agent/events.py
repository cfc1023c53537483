"""The wire envelope of an event: what every MQTT/HTTPS payload carries.

{"event_id", "seq"} are added by the buffer at commit; this adds the rest:
schema (versioned per type), type, site, area, line, machine, ts (RFC 3339 UTC, ms)
and the event's own fields.
"""

from __future__ import annotations

from typing import Any

from buffer import NewEvent
from edge_agent.config import Config
from edge_agent.model import Event, rfc3339

SCHEMA_VERSION = 1


def schema_id(event_type: str) -> str:
    return f"edge-agent/{event_type}/v{SCHEMA_VERSION}"


def envelope(cfg: Config, event: Event) -> dict[str, Any]:
    p = cfg.plant
    return {
        "schema": schema_id(event.type),
        "type": event.type,
        "site": p.site,
        "area": p.area,
        "line": p.line,
        "machine": event.machine,
        "ts": rfc3339(event.ts),
        **event.fields,
    }


def to_store(cfg: Config, event: Event) -> NewEvent:
    """An event as the buffer stores it: topic `<root>/event/<type>` and its envelope."""
    return NewEvent(event.type, event.ts, f"{cfg.topic_root(event.machine)}/event/{event.type}", envelope(cfg, event))
