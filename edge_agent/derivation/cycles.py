"""Machine cycles: from a cycle-complete bit edge, a cycle counter, or a part counter increase. Pure.

A cycle's time is the time since the previous cycle; it is unknown (null) for the
first cycle after a start, a restart or a loss of connection, so an outage never
shows up as one very long cycle. Parts are those counted since the previous cycle.
From a part counter, an increase of k parts is k / parts_per_cycle cycles.
"""

from __future__ import annotations

from typing import Any


def resolve_source(machine) -> str | None:
    sig, source = machine.signals, machine.cycle.source
    if source == "none":
        return None
    if source != "auto":
        return source
    if sig.cycle_complete:
        return "cycle_complete"
    if sig.cycle_counter:
        return "cycle_counter"
    if sig.part_counter or sig.good_counter:
        return "part_counter"
    return None


class Cycles:
    def __init__(self, machine, state: dict[str, Any] | None = None):
        self.source = resolve_source(machine)
        self.parts_per_cycle = machine.cycle.parts_per_cycle
        self.has_counter = bool(machine.signals.part_counter or machine.signals.good_counter)
        s = state or {}
        self.bit: bool | None = s.get("bit")
        self.last_ts: float | None = s.get("last_ts")
        self.parts: int = s.get("parts", 0)
        self._edges = 0

    def snapshot(self) -> dict[str, Any]:
        return {"bit": self.bit, "last_ts": self.last_ts, "parts": self.parts}

    def on_bit(self, value: bool) -> None:
        if self.bit is False and value:
            self._edges += 1
        self.bit = value

    def lost(self) -> None:
        """Connection lost or agent restarted: no edge from stale bits, no cycle time across the gap."""
        self.bit, self.last_ts = None, None

    def take(self, ts: float, total: int, cycle_count: int) -> dict[str, Any] | None:
        """Fields of a cycle event for this poll cycle, or None."""
        self.parts += total
        n = {"cycle_complete": self._edges, "cycle_counter": cycle_count,
             "part_counter": max(1, total // self.parts_per_cycle) if total > 0 else 0}.get(self.source or "", 0)
        self._edges = 0
        if n == 0:
            return None
        parts = self.parts if self.has_counter else n * self.parts_per_cycle
        cycle_time = (ts - self.last_ts) / n if self.last_ts is not None else None
        self.parts, self.last_ts = 0, ts
        return {"cycles": n, "parts": parts, "cycle_time": None if cycle_time is None else round(cycle_time, 3),
                "source": self.source}
