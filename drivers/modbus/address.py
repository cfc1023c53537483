"""Modbus tag addresses and value codecs. Pure: no pymodbus import.

Address form: `<table>:<number>` with a 0-based number, table one of
`hr` (holding register), `ir` (input register), `coil`, `di` (discrete input),
e.g. `hr:100`, `coil:3`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

BIT_TABLES = {"coil", "di"}
REGISTER_TABLES = {"hr", "ir"}
_TABLE_ALIASES = {"hr": "hr", "holding": "hr", "ir": "ir", "input": "ir",
                  "coil": "coil", "co": "coil", "di": "di", "discrete": "di"}
_ADDRESS = re.compile(r"^\s*([a-zA-Z]+)\s*:\s*(\d+)\s*$")
MAX_ADDRESS = 65535

# type -> (registers, struct code)
REGISTER_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, "h"), "uint16": (1, "H"),
    "int32": (2, "i"), "uint32": (2, "I"), "float32": (2, "f"),
    "int64": (4, "q"), "uint64": (4, "Q"), "float64": (4, "d"),
}


class TypeMismatch(ValueError):
    field = "type"


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    table: str  # hr | ir | coil | di
    number: int  # 0-based
    width: int  # registers (or bits) the value spans
    data_type: str

    @property
    def end(self) -> int:
        return self.number + self.width


def parse(address: str, data_type: str, device: Any = None) -> ModbusAddress:
    m = _ADDRESS.match(address)
    if not m or m.group(1).lower() not in _TABLE_ALIASES:
        raise ValueError(
            f"bad Modbus address {address!r}: expected <table>:<number> with table hr, ir, coil or di, e.g. hr:100"
        )
    table, number = _TABLE_ALIASES[m.group(1).lower()], int(m.group(2))
    if table in BIT_TABLES:
        if data_type != "bool":
            raise TypeMismatch(f"type {data_type!r} does not fit {table} {number}: coils and discrete inputs are bool")
        width = 1
    else:
        if data_type not in REGISTER_TYPES:
            valid = ", ".join(REGISTER_TYPES)
            raise TypeMismatch(f"type {data_type!r} is not a register type (one of {valid})")
        width = REGISTER_TYPES[data_type][0]
    if number + width - 1 > MAX_ADDRESS:
        raise ValueError(f"bad Modbus address {address!r}: beyond register {MAX_ADDRESS}")
    return ModbusAddress(table, number, width, data_type)


def _order(raw: bytes, byte_order: str) -> bytes:
    """Bring register bytes in the device's order into big-endian (ABCD) order, or back."""
    if byte_order in ("CDAB", "DCBA"):  # words reversed
        raw = b"".join(raw[i:i + 2] for i in range(len(raw) - 2, -1, -2))
    if byte_order in ("BADC", "DCBA"):  # bytes swapped within each word
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return raw


def decode(registers: list[int], data_type: str, byte_order: str = "ABCD") -> int | float:
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return struct.unpack(">" + REGISTER_TYPES[data_type][1], _order(raw, byte_order))[0]


def encode(value: int | float, data_type: str, byte_order: str = "ABCD") -> list[int]:
    """Inverse of `decode`, for the simulator and tests."""
    raw = _order(struct.pack(">" + REGISTER_TYPES[data_type][1], value), byte_order)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
