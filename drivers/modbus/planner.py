"""Read planning for Modbus: tags in, as few requests as the address map allows out.

Pure function, so it can be tested with tables and its minimum checked against
the requests a real server counts.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def plan(tags: Iterable[tuple[str, ModbusAddress, int]]) -> list[Request]:
    """(tag name, address, unit) -> read requests.

    Per unit and table, tags sorted by address are packed greedily into windows of at
    most 125 registers / 2000 bits; a value never straddles two requests. For points
    on a line covered by fixed-size windows, greedy-by-start is optimal, so the number
    of requests is the minimum.
    """
    groups: dict[tuple[int, str], list[tuple[str, ModbusAddress]]] = {}
    for name, addr, unit in tags:
        groups.setdefault((unit, addr.table), []).append((name, addr))
    requests: list[Request] = []
    for (unit, table), members in sorted(groups.items()):
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        members.sort(key=lambda m: (m[1].number, m[1].width))
        current: Request | None = None
        for name, addr in members:
            if current is not None and addr.end - current.start <= limit:
                current.count = max(current.count, addr.end - current.start)
                current.members.append((name, addr))
                continue
            current = Request(table, unit, addr.number, addr.width, [(name, addr)])
            requests.append(current)
    return requests
