"""Interval aggregates: planned, run, down and micro-stop time plus counts, per interval. Pure.

Time is booked here only once it is classified for good (a stop is a micro-stop or
downtime only when it ends or passes the threshold; a state only after its
debounce), so an interval is closed when every second of it is booked: up to
debounce + micro_stop after its end. Each pending interval is a bucket; the open
bucket takes what comes after the last boundary. Only planned time (per the shift
calendar) is booked; unbooked planned time is not_available (unobserved).
"""

from __future__ import annotations

import math
from typing import Any

MAX_CATCH_UP = 100  # more boundaries than this at once (agent was off for long): one aggregate for the gap


def new_acc() -> dict[str, Any]:
    return {"run": 0.0, "micro": 0.0, "down": {}, "micro_stops": 0, "downtimes": 0,
            "total": 0, "good": 0, "scrap": 0, "cycles": 0}


def add_acc(into: dict[str, Any], acc: dict[str, Any]) -> None:
    for k, v in acc.items():
        if k == "down":
            for key, secs in v.items():
                into["down"][key] = into["down"].get(key, 0.0) + secs
        else:
            into[k] += v


class Ledger:
    def __init__(self, interval: float, calendar, state: dict[str, Any] | None = None, *, at_shifts: bool = True):
        self.interval, self.calendar, self.at_shifts = interval, calendar, at_shifts
        s = state or {}
        self.start: float | None = s.get("start")  # start of the oldest unemitted bucket
        self.next_boundary: float | None = s.get("next_boundary")
        self.passed: float | None = s.get("passed", self.start)  # boundaries up to here are closed
        self.closed: list[dict[str, Any]] = s.get("closed", [])  # [{end, reason, order, acc}]
        self.open: dict[str, Any] = s.get("open") or {"order": None, "acc": new_acc()}

    def snapshot(self) -> dict[str, Any]:
        return {"start": self.start, "next_boundary": self.next_boundary, "passed": self.passed,
                "closed": self.closed, "open": self.open}

    def begin(self, t: float, order: dict | None) -> None:
        """The first aggregate starts at the wall-clock boundary before t (the rest is unobserved)."""
        self.start = self.passed = math.floor(t / self.interval) * self.interval
        self.next_boundary = self.start + self.interval
        self.open = {"order": order, "acc": new_acc()}

    def pass_time(self, t: float) -> None:
        """Close the open bucket at every wall-clock boundary (and shift start/end) up to t."""
        if self.next_boundary is None or self.passed is None or t <= self.passed:
            return
        if (t - self.next_boundary) / self.interval > MAX_CATCH_UP:
            grid = math.floor(t / self.interval) * self.interval
            self.close_at(grid, "interval")
            self.next_boundary, self.passed = grid + self.interval, grid
        edges = {e: "shift" for e in self.calendar.shift_edges(self.passed, t)} if self.at_shifts else {}
        while self.next_boundary <= t:
            edges[self.next_boundary] = "interval"
            self.next_boundary += self.interval
        for e in sorted(edges):
            self.close_at(e, edges[e])
        self.passed = t

    def close_at(self, t: float, reason: str, order: Any = ...) -> None:
        """End the open bucket at t; a new one starts with `order` (unchanged if not given)."""
        last = self.closed[-1]["end"] if self.closed else self.start
        if t <= last:  # nothing since the last boundary: only the order changes
            if order is not ...:
                self.open["order"] = order
            return
        self.closed.append({"end": t, "reason": reason, **self.open})
        self.open = {"order": self.open["order"] if order is ... else order, "acc": new_acc()}

    def _buckets(self):
        """(start, end, bucket) for every bucket, the open one last with end = inf."""
        lo = self.start
        for b in self.closed:
            yield lo, b["end"], b
            lo = b["end"]
        yield lo, math.inf, self.open

    def add_time(self, a: float, b: float, kind: str, key: str | None = None) -> None:
        """Book [a, b) as run / micro / down (key = downtime id): only its planned part."""
        if b <= a or self.start is None:
            return
        for lo, hi, bucket in self._buckets():
            x, y = max(a, lo), min(b, hi)
            if y <= x:
                continue
            secs = self.calendar.planned(x, y)
            if secs <= 0:
                continue
            acc = bucket["acc"]
            if kind == "down":
                acc["down"][key] = acc["down"].get(key, 0.0) + secs
            else:
                acc[kind] += secs

    def add(self, t: float, **counts: int) -> None:
        """Add counts (total, good, scrap, cycles, micro_stops, downtimes) to the bucket holding t."""
        for _lo, hi, bucket in self._buckets():
            if t < hi:
                for k, v in counts.items():
                    bucket["acc"][k] += v
                return

    def ready(self, booked_until: float) -> list[tuple[float, dict[str, Any]]]:
        """Pop the closed buckets whose every second is booked: [(start, bucket)]."""
        out = []
        while self.closed and self.closed[0]["end"] <= booked_until:
            b = self.closed.pop(0)
            out.append((self.start, b))
            self.start = b["end"]
        return out
