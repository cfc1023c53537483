"""A simulated production machine: cycles, random stops, a part counter, scrap.

Pure and deterministic for a seed: `advance(t)` moves it to time `t` (seconds on any
monotonic clock). Protocol frontends (Modbus, OPC UA, S7) expose `values()` at the
addresses of the tags a config binds to the machine's signals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class SimulatedMachine:
    cycle_time: float = 1.0  # seconds per part while running
    stop_probability: float = 0.05  # chance that a cycle ends in a stop
    stop_duration: tuple[float, float] = (2.0, 6.0)  # seconds, uniform
    scrap_rate: float = 0.03
    seed: int = 1
    counter_modulus: int = 2**32  # the PLC's counter width (wraps like a UDINT)

    running: bool = True
    total: int = 0  # every part, good or scrap
    scrap: int = 0
    cycles: int = 0
    fault_code: int = 0
    last_cycle_time: float = 0.0
    _t: float | None = field(default=None, repr=False)
    _next: float = field(default=0.0, repr=False)  # time of the next transition
    _cycle_start: float = field(default=0.0, repr=False)
    _rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def advance(self, t: float) -> None:
        if self._t is None:
            self._t, self._cycle_start, self._next = t, t, t + self.cycle_time
            return
        while self._next <= t:
            at = self._next
            if self.running:
                self.cycles += 1
                self.total += 1
                self.last_cycle_time = at - self._cycle_start
                if self._rng.random() < self.scrap_rate:
                    self.scrap += 1
                if self._rng.random() < self.stop_probability:
                    self.running = False
                    self.fault_code = self._rng.choice((101, 205, 310))
                    self._next = at + self._rng.uniform(*self.stop_duration)
                else:
                    self._next = at + self.cycle_time
            else:
                self.running, self.fault_code = True, 0
                self._next = at + self.cycle_time
            self._cycle_start = at
        self._t = t

    @property
    def good(self) -> int:
        return self.total - self.scrap

    def values(self) -> dict[str, object]:
        """Signal name (as in a machine's `signals:` config) -> current PLC value."""
        m = self.counter_modulus
        return {
            "run": self.running,
            "part_counter": self.total % m,
            "good_counter": self.good % m,
            "scrap_counter": self.scrap % m,
            "cycle_counter": self.cycles % m,
            "fault": not self.running,
            "fault_code": self.fault_code,
            "reason_code": self.fault_code,
            "cycle_time": self.last_cycle_time,
            # a pulse after each completed cycle, half a cycle long, so a poll can see its edge
            "cycle_complete": self.running and self.cycles > 0 and (self._t or 0) - self._cycle_start < self.cycle_time / 2,
            "mode": 1,  # automatic
            "setup": False,
            "packml_state": 6 if self.running else 9,  # Execute / Aborted
            "execution": "ACTIVE" if self.running else "STOPPED",
        }
