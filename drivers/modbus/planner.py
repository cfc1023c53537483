"""Read planning for Modbus: tags in, as few requests as the address map allows out.

Pure function, so it can be tested with tables and its minimum checked against
the requests a real server counts.

What the driver learned from exception responses comes back in as two inputs:
`alone` (tags whose own registers answer an exception: each gets a request of its
own, so it can be retried without disturbing the others) and `breaks` (register
ranges no merged request may touch: the registers of those tags and unreadable gaps
between tags found while isolating).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from drivers.modbus.address import BIT_TABLES, ModbusAddress

MAX_REGISTERS = 125  # per read request (Modbus application protocol, FC 3/4)
MAX_BITS = 2000  # per read request (FC 1/2)


@dataclass(slots=True)
class Request:
    table: str
    unit: int
    start: int
    count: int
    members: list[tuple[str, ModbusAddress]] = field(default_factory=list)  # (tag name, address)

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Break:
    """Registers [lo, hi) of a unit's table that no request of two or more tags may overlap.

    lo == hi is a cut point: no merged request may span across it (used when two
    halves read fine alone but not together, e.g. a device with a shorter request limit).
    """

    unit: int
    table: str
    lo: int
    hi: int

    def hit(self, unit: int, table: str, start: int, end: int) -> bool:
        return unit == self.unit and table == self.table and start < self.hi and self.lo < end


def plan(tags: Iterable[tuple[str, ModbusAddress, int]], *, alone: Collection[str] = (),
         breaks: Collection[Break] = ()) -> list[Request]:
    """(tag name, address, unit) -> read requests.

    Per unit and table, tags sorted by address are packed greedily into windows of at
    most 125 registers / 2000 bits; a value never straddles two requests. For points
    on a line covered by fixed-size windows, greedy-by-start is optimal, so the number
    of requests is the minimum. That stays true with `breaks`: a merged request that
    is allowed stays allowed when it loses a member at either end.
    Tags in `alone` get one request each, placed after the merged ones of their group.
    """
    groups: dict[tuple[int, str], list[tuple[str, ModbusAddress]]] = {}
    for name, addr, unit in tags:
        groups.setdefault((unit, addr.table), []).append((name, addr))
    requests: list[Request] = []
    for (unit, table), members in sorted(groups.items()):
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        relevant = [b for b in breaks if b.unit == unit and b.table == table]
        members.sort(key=lambda m: (m[1].number, m[1].width, m[0]))
        singles: list[Request] = []
        current: Request | None = None
        for name, addr in members:
            if name in alone:
                singles.append(Request(table, unit, addr.number, addr.width, [(name, addr)]))
                continue
            if current is not None:
                end = max(current.end, addr.end)
                if end - current.start <= limit and not any(
                        b.hit(unit, table, current.start, end) for b in relevant):
                    current.count = end - current.start
                    current.members.append((name, addr))
                    continue
            current = Request(table, unit, addr.number, addr.width, [(name, addr)])
            requests.append(current)
        requests.extend(singles)
    return requests
