"""Planned production time: shifts minus breaks, in the plant's local time zone. Pure.

Availability and performance are measured against planned time only, so a machine
that stands still during a break or at night loses nothing. Without a calendar the
machine is planned around the clock.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 86400


def clock_seconds(hhmm: str) -> int:
    """'06:30' or '06:30:15' -> seconds after midnight."""
    parts = [int(p) for p in hhmm.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def _offsets(shift) -> tuple[int, list[tuple[int, int]]]:
    """Shift length and its breaks as offsets from the shift start (handles shifts past midnight)."""
    start = clock_seconds(shift.start)
    length = (clock_seconds(shift.end) - start) % _DAY or _DAY
    breaks = []
    for b in shift.breaks:
        bs = (clock_seconds(b.start) - start) % _DAY
        be = bs + ((clock_seconds(b.end) - clock_seconds(b.start)) % _DAY)
        breaks.append((bs, be))
    return length, breaks


def check_shift(shift) -> None:
    """Raise ValueError for a break that is empty or not inside its shift."""
    length, breaks = _offsets(shift)
    for b, (bs, be) in zip(shift.breaks, breaks):
        if be <= bs or be > length:
            raise ValueError(f"break {b.start}-{b.end} is not inside shift {shift.name!r} ({shift.start}-{shift.end})")


class ShiftCalendar:
    """`planned(a, b)`: seconds of planned production time in [a, b) (UTC epoch seconds)."""

    def __init__(self, calendar=None):
        self.calendar = calendar
        if calendar is not None:
            self._zone = ZoneInfo(calendar.timezone)
            self._shifts = [(clock_seconds(s.start), *_offsets(s), {DAYS.index(d) for d in s.days})
                            for s in calendar.shifts]
            self._periods = lru_cache(maxsize=64)(self._periods_of)
            self._edges = lru_cache(maxsize=64)(self._edges_of)

    def planned(self, a: float, b: float) -> float:
        if b <= a:
            return 0.0
        if self.calendar is None:
            return b - a
        first = datetime.fromtimestamp(a, self._zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(b, self._zone).date()
        spans: list[tuple[float, float]] = []
        d = first
        while d <= last:
            for s, e in self._periods(d):
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    spans.append((lo, hi))
            d += timedelta(days=1)
        return _union_length(spans)

    def shift_edges(self, a: float, b: float) -> list[float]:
        """Starts and ends of shifts in (a, b]: where shift reports begin and end."""
        if self.calendar is None or b <= a:
            return []
        d = datetime.fromtimestamp(a, self._zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(b, self._zone).date()
        out: set[float] = set()
        while d <= last:
            out.update(x for x in self._edges(d) if a < x <= b)
            d += timedelta(days=1)
        return sorted(out)

    def _edges_of(self, day: date) -> list[float]:
        return [x for start, length, _breaks, days in self._shifts if day.weekday() in days
                for x in (self._utc(day, start), self._utc(day, start + length))]

    def _periods_of(self, day: date) -> list[tuple[float, float]]:
        """Planned periods (UTC) of the shifts that start on this local date."""
        out = []
        for start, length, breaks, days in self._shifts:
            if day.weekday() not in days:
                continue
            pos = 0
            for bs, be in sorted(breaks) + [(length, length)]:
                if bs > pos:
                    out.append((self._utc(day, start + pos), self._utc(day, start + bs)))
                pos = max(pos, be)
        return out

    def _utc(self, day: date, seconds: int) -> float:
        """Local wall-clock time `seconds` after midnight of `day` (may pass midnight) -> epoch."""
        d = day + timedelta(days=seconds // _DAY)
        s = seconds % _DAY
        return datetime.combine(d, time(s // 3600, s % 3600 // 60, s % 60), tzinfo=self._zone).timestamp()


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping spans (overlapping shifts count once)."""
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(spans):
        if hi <= end:
            continue
        total += hi - max(lo, end)
        end = hi
    return total
