"""Derivation: samples in, machine facts out. Pure: no I/O, no clock, no randomness.

One `Deriver` per machine. `step()` takes the samples of a poll cycle (and device
status changes) and returns the events they imply; `snapshot()` is the state to
persist with those events (in the same buffer transaction), and passing it back to
the constructor after a restart continues exactly where the agent stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge_agent.config import Machine
from edge_agent.model import DeviceStatus, Event, Quality, Sample

COUNTER_MODULUS = 2**32


class Deriver:
    def __init__(self, machine: Machine, state: dict[str, Any] | None = None):
        self.machine = machine
        s = state or {}
        self._state: str | None = s.get("state")
        self._counter: int | None = s.get("counter")

    def snapshot(self) -> dict[str, Any]:
        return {"state": self._state, "counter": self._counter}

    def step(self, items: Sequence[Sample | DeviceStatus]) -> list[Event]:
        events: list[Event] = []
        sig = self.machine.signals
        for item in items:
            if not isinstance(item, Sample) or item.quality is not Quality.GOOD:
                continue
            if item.tag == sig.run:
                events.extend(self._run_signal(item))
            if item.tag == sig.part_counter:
                events.extend(self._part_counter(item))
        return events

    def tick(self, now: float) -> list[Event]:
        """Time-based outputs (none yet in the minimal model)."""
        return []

    def command(self, cmd: dict[str, Any], now: float) -> list[Event]:
        raise ValueError(f"unknown command {cmd.get('command')!r}")

    def _run_signal(self, s: Sample) -> list[Event]:
        state = "executing" if s.value else "not_executing"
        if state == self._state:
            return []
        previous, self._state = self._state, state
        return [Event("state", self.machine.id, s.ts,
                      {"state": state, "previous": previous, "source": {"tag": s.tag, "value": s.value}})]

    def _part_counter(self, s: Sample) -> list[Event]:
        raw = int(s.value)
        last, self._counter = self._counter, raw
        if last is None or raw == last:
            return []
        if raw > last:
            delta = raw - last
        elif last - raw > COUNTER_MODULUS // 2:  # wrapped past the top of a 32-bit counter
            delta = raw + COUNTER_MODULUS - last
        else:  # reset (shift change, PLC restart): not a negative count
            return [Event("counter_reset", self.machine.id, s.ts, {"tag": s.tag, "from": last, "to": raw})]
        return [Event("count", self.machine.id, s.ts, {"count": delta, "counter": raw, "tag": s.tag})]
