"""Raw PLC counters -> part counts: wraps are counted, resets and jumps never are. Pure.

A counter is compared with its last raw value (kept in the snapshot, so a restart
continues from it and counts what was made while the agent was down). A drop is a
wrap when the wrapped difference is plausible (<= max_step), else a reset: the PLC
counter is assumed to restart from zero, so the new raw value is what was made
since. A forward jump beyond max_step (a preset, a swapped PLC) is re-based, not counted.
"""

from __future__ import annotations

from typing import Any

COUNTER_SIGNALS = ("part_counter", "good_counter", "scrap_counter", "cycle_counter")


def counter_delta(last: int, raw: int, modulus: int, max_step: int) -> tuple[int, str]:
    """(parts, kind) with kind one of same, count, wrap, reset, jump."""
    if raw == last:
        return 0, "same"
    if raw > last:
        return (raw - last, "count") if raw - last <= max_step else (0, "jump")
    wrapped = raw + modulus - last
    if wrapped <= max_step:
        return wrapped, "wrap"
    return (raw, "reset") if raw <= max_step else (0, "reset")


class Counters:
    """The machine's counter signals; `update()` per sample, `take()` once per poll cycle."""

    def __init__(self, machine, state: dict[str, Any] | None = None):
        cfg, sig = machine.counters, machine.signals
        self.modulus = 2 ** cfg.width
        self.max_step = cfg.max_step or min(self.modulus // 4, 1_000_000)
        self.tags = {name: getattr(sig, name) for name in COUNTER_SIGNALS if getattr(sig, name)}
        self.primary = "part_counter" if sig.part_counter else "good_counter" if sig.good_counter else None
        s = state or {}
        self.last: dict[str, int] = dict(s.get("last", {}))
        self.good_debt: int = s.get("good_debt", 0)  # scrap seen before the total that contains it
        self._step: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"last": dict(self.last), "good_debt": self.good_debt}

    def update(self, signal: str, value: Any) -> dict[str, Any] | None:
        """Take one raw value; returns a reset/jump description (for a counter_reset event) or None."""
        try:
            raw = int(value) % self.modulus
        except (TypeError, ValueError):
            return None
        last = self.last.get(signal)
        self.last[signal] = raw
        if last is None:
            return None
        delta, kind = counter_delta(last, raw, self.modulus, self.max_step)
        self._step[signal] = self._step.get(signal, 0) + delta
        if kind in ("reset", "jump"):
            return {"signal": signal, "tag": self.tags[signal], "from": last, "to": raw, "kind": kind,
                    "counted": delta}
        return None

    def take(self) -> tuple[int, int, int, int]:
        """(total, good, scrap, cycles) counted since the last take()."""
        d, self._step = self._step, {}
        scrap = d.get("scrap_counter", 0)
        if self.primary == "good_counter":
            good, total = d.get("good_counter", 0), d.get("good_counter", 0) + scrap
        else:
            total = d.get("part_counter", 0)
            good = total - scrap + self.good_debt
            self.good_debt = min(good, 0)
            good = max(good, 0)
        return total, good, scrap, d.get("cycle_counter", 0)

    def raw(self) -> int | None:
        return self.last.get(self.primary) if self.primary else None
