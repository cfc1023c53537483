"""ISO 22400 key figures from measured times and counts. Pure.

availability = APT / PBT      (run time / planned busy time: planned time minus not_available)
performance  = PQ * PCT / APT (parts * ideal cycle time / run time)
quality      = GQ / PQ        (good / total parts)
OEE          = availability * performance * quality
A figure whose denominator is zero (or whose ideal cycle time is unknown) is None.
"""

from __future__ import annotations


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def figures(run_time: float, downtime: float, total: int, good: int, ideal_cycle_time: float | None) -> dict:
    availability = _ratio(run_time, run_time + downtime)
    performance = _ratio(total * ideal_cycle_time, run_time) if ideal_cycle_time else None
    quality = _ratio(good, total)
    oee = availability * performance * quality if None not in (availability, performance, quality) else None
    return {"availability": _round(availability), "performance": _round(performance), "quality": _round(quality),
            "oee": _round(oee)}
