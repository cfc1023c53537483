"""`edge-agent scan`: read a register range and show every plausible interpretation.

A technician looking for the part counter of an undocumented device reads a range
and compares the columns with the number on the HMI: each register as u16, i16, hex
and ASCII, and each pair of registers starting there as u32, i32 and f32 in the
four byte orders. Registers that answer an exception are found by splitting the
failing request, so one hole does not hide its neighbours.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from drivers.modbus.address import MAX_ADDRESS, decode, modicon_number, notation
from drivers.modbus.planner import MAX_REGISTERS
from edge_agent.errors import DriverError

BYTE_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
_RANGE = re.compile(r"^\s*(?:(hr|ir):)?(\d+)\s*-\s*(?:(hr|ir):)?(\d+)\s*$", re.IGNORECASE)


@dataclass(slots=True)
class Row:
    number: int  # 0-based, as on the wire
    address: str  # as written on this device (its addressing)
    word: int | None  # None when the register could not be read
    error: str | None = None


def parse_range(text: str, device, table: str | None = None) -> tuple[str, int, int]:
    """`A-B` (inclusive, in the device's addressing) -> (table, first, last) 0-based.

    On a `modicon` device `40001-40100` names the table by its first digit; otherwise
    the numbers count as the device does (1-based for modicon, 0-based for zero_based)
    and `--table` (default hr) names the table; `hr:0-99` works too.
    """
    m = _RANGE.match(text)
    if not m:
        raise ValueError(f"bad range {text!r}: expected A-B, e.g. 0-99 or 40001-40100")
    prefix = (m.group(1) or m.group(3) or "").lower() or None
    a, b = m.group(2), m.group(4)
    modicon = getattr(device, "addressing", "zero_based") == "modicon"
    if modicon and prefix is None and len(a) in (5, 6) and len(b) in (5, 6):
        first, last = modicon_number(a), modicon_number(b)
        for raw, parsed in ((a, first), (b, last)):
            if isinstance(parsed, str):
                raise ValueError(f"bad range {text!r}: {raw}: {parsed}")
        if first[0] != last[0]:
            raise ValueError(f"bad range {text!r}: both ends must be in the same table")
        if first[0] not in ("hr", "ir"):
            raise ValueError(f"bad range {text!r}: scan reads registers (3xxxx or 4xxxx), not bits")
        if table and table != first[0]:
            raise ValueError(f"bad range {text!r}: the numbers name table {first[0]}, not --table {table}")
        found, start, end = first[0], first[1], last[1]
    else:
        found = prefix or table or "hr"
        if table and prefix and table != prefix:
            raise ValueError(f"bad range {text!r}: the range names table {prefix}, not --table {table}")
        start, end = int(a), int(b)
        if modicon:
            if start == 0:
                raise ValueError(f"bad range {text!r}: this device counts from 1 (addressing: modicon)")
            start, end = start - 1, end - 1
    if end < start:
        raise ValueError(f"bad range {text!r}: the end is before the start")
    if end > MAX_ADDRESS:
        raise ValueError(f"bad range {text!r}: beyond register {MAX_ADDRESS}")
    return found, start, end


async def scan(device, *, unit: int, table: str, start: int, end: int,
               progress: Callable[[int, int], None] | None = None) -> list[Row]:
    """Read registers start..end (inclusive, 0-based) of one unit; one Row per register."""
    from drivers.modbus.driver import ModbusDriver, ModbusExceptionResponse, NoResponse

    driver = ModbusDriver(device, [])
    await driver.connect()
    addressing = getattr(device, "addressing", "zero_based")
    words: dict[int, int] = {}
    errors: dict[int, str] = {}
    total = end - start + 1

    async def read(first: int, count: int) -> None:
        try:
            values = await driver.read_block(table, unit, first, count)
        except ModbusExceptionResponse as e:
            if count == 1:
                errors[first] = str(e)
                return
            half = count // 2
            await read(first, half)
            await read(first + half, count - half)
            return
        words.update(zip(range(first, first + count), values))

    try:
        for first in range(start, end + 1, MAX_REGISTERS):
            count = min(MAX_REGISTERS, end + 1 - first)
            try:
                await read(first, count)
            except NoResponse as e:
                if first == start:
                    raise DriverError(device.name, str(e)) from None
                for n in range(first, first + count):
                    errors[n] = "no response"
            if progress is not None:
                progress(first + count - start, total)
    finally:
        await driver.close()
    return [Row(n, notation(table, n, addressing), words.get(n), errors.get(n)) for n in range(start, end + 1)]


def interpret(rows: list[Row]) -> list[dict]:
    """Each register in every interpretation; 32-bit values use this register and the next."""
    out = []
    for i, row in enumerate(rows):
        entry: dict = {"number": row.number, "address": row.address}
        if row.word is None:
            entry["error"] = row.error
            out.append(entry)
            continue
        w = row.word
        entry.update(u16=w, i16=w - 65536 if w >= 32768 else w, hex=f"0x{w:04X}", ascii=_ascii(w))
        nxt = rows[i + 1].word if i + 1 < len(rows) else None
        if nxt is not None:
            for order in BYTE_ORDERS:
                pair = [w, nxt]
                entry[order] = {"u32": decode(pair, "uint32", order), "i32": decode(pair, "int32", order),
                                "f32": _float(decode(pair, "float32", order))}
        out.append(entry)
    return out


def _ascii(word: int) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in word.to_bytes(2, "big"))


def _float(value: float) -> float | str:
    if not math.isfinite(value):
        return str(value)  # nan/inf: not valid JSON numbers
    return float(f"{value:.7g}")


def render_json(rows: list[Row]) -> str:
    return json.dumps(interpret(rows), indent=1)


def render_text(rows: list[Row]) -> str:
    head = f"{'address':>8} {'u16':>6} {'i16':>6} {'hex':>6} {'ascii':>5}"
    for order in BYTE_ORDERS:
        head += f" | {order + ' u32':>11} {'i32':>11} {'f32':>12}"
    lines = [head, "-" * len(head)]
    for entry in interpret(rows):
        if "error" in entry:
            lines.append(f"{entry['address']:>8} {entry['error']}")
            continue
        line = f"{entry['address']:>8} {entry['u16']:>6} {entry['i16']:>6} {entry['hex']:>6} {entry['ascii']:>5}"
        for order in BYTE_ORDERS:
            v = entry.get(order)
            if v is None:
                line += f" | {'':>11} {'':>11} {'':>12}"
            else:
                f32 = v["f32"] if isinstance(v["f32"], str) else f"{v['f32']:.7g}"
                line += f" | {v['u32']:>11} {v['i32']:>11} {f32:>12}"
        lines.append(line)
    readable = sum(r.word is not None for r in rows)
    lines.append(f"{readable} of {len(rows)} registers readable")
    return "\n".join(lines)
