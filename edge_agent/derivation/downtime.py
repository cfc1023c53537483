"""Downtime records: identity, reason and the catalogue that names PLC reason codes. Pure.

A downtime's `downtime_id` is `<machine>-<start in epoch ms>`: stable across restarts
and replays, known before the buffer gives its event an `event_id`. The MES may
classify by either; event ids are learned through `remember()` after the buffer
commit. Recent downtimes (open and closed) are kept so late classification works.
"""

from __future__ import annotations

from typing import Any

KEEP = 50  # downtimes remembered for classification (the snapshot is written every poll)
EVENT_IDS_PER_DOWNTIME = 4


def reason_of(code: Any, state: str, catalogue: dict[int, str]) -> tuple[str | None, str | None]:
    """(reason, reason_source) from a PLC code through the catalogue, else from the state."""
    if code is not None:
        try:
            name = catalogue.get(int(code))
        except (TypeError, ValueError):
            name = None
        return name or f"code:{code}", "plc"
    if state == "setup":
        return "setup", "state"
    return None, None


def reason_key(record: dict[str, Any] | None) -> str:
    return (record or {}).get("reason") or "unclassified"


class Downtimes:
    def __init__(self, machine_id: str, state: dict[str, Any] | None = None):
        self.machine_id = machine_id
        s = state or {}
        self.records: list[dict[str, Any]] = s.get("records", [])
        self.last_ms: int = s.get("last_ms", 0)

    def snapshot(self) -> dict[str, Any]:
        return {"records": self.records, "last_ms": self.last_ms}

    def open(self, start: float, state: str, code: Any, catalogue: dict[int, str]) -> dict[str, Any]:
        ms = max(round(start * 1000), self.last_ms + 1)
        self.last_ms = ms
        reason, source = reason_of(code, state, catalogue)
        rec = {"downtime_id": f"{self.machine_id}-{ms}", "status": "open", "start": start, "end": None,
               "state": state, "reason": reason, "reason_code": code, "reason_source": source,
               "planned_duration": None, "event_ids": []}
        self.records.append(rec)
        del self.records[:-KEEP]
        return rec

    def get(self, downtime_id: str | None) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r["downtime_id"] == downtime_id), None)

    def find(self, ref: str) -> dict[str, Any] | None:
        """By downtime_id or by the event_id of one of its events."""
        return next((r for r in reversed(self.records) if ref == r["downtime_id"] or ref in r["event_ids"]), None)

    def remember(self, event_id: str, downtime_id: str) -> None:
        rec = self.get(downtime_id)
        if rec is not None and event_id not in rec["event_ids"]:
            rec["event_ids"] = (rec["event_ids"] + [event_id])[-EVENT_IDS_PER_DOWNTIME:]
