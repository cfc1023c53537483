"""Modbus tag addresses and value codecs. Pure: no pymodbus import.

Address forms (the device's `addressing` decides how numbers count):

- `addressing: zero_based` (default): `<table>:<number>` with the 0-based register
  number as sent on the wire (the PDU address), table one of `hr` (holding register),
  `ir` (input register), `coil`, `di` (discrete input): `hr:100`, `ir:5`, `coil:3`, `di:7`.
- `addressing: modicon`: the classic 1-based notation of device manuals, the first
  digit naming the table: `00001`-`09999` coils, `10001`-`19999` discrete inputs,
  `30001`-`39999` input registers, `40001`-`49999` holding registers; six digits for
  the full range (`400001`-`465536`). `40001` is holding register 0 on the wire.
  Table prefixes count from 1 too on such a device (`hr:1` is `40001`).

Suffixes, in this order:
- `.N` bit N (0 = least significant, 0-15) of a register, type `bool`: `hr:9.3`, `40010.3`.
- `@U` the unit id (slave id) when it differs from the device's `unit`, for several
  devices behind one serial line or gateway: `hr:100@2`, `40001.3@7`.
  (A tag's `unit:` field is its engineering unit, so the unit id lives in the address.)

Types: bool (coils, discrete inputs, bits of registers), int16, uint16, int32,
uint32, float32, int64, uint64, float64, and `string[n]`: n characters (bytes),
two per register, so it spans ceil(n/2) registers; the first character is the high
byte of the first register (ABCD/CDAB devices) or the low byte (BADC/DCBA devices);
the value ends at the first NUL, trailing spaces are removed.
Multi-register numbers follow the device's `byte_order` (ABCD, CDAB, BADC, DCBA).
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BIT_TABLES = {"coil", "di"}
REGISTER_TABLES = {"hr", "ir"}
_TABLE_ALIASES = {"hr": "hr", "holding": "hr", "ir": "ir", "input": "ir",
                  "coil": "coil", "co": "coil", "di": "di", "discrete": "di"}
_MODICON_TABLES = {"0": "coil", "1": "di", "3": "ir", "4": "hr"}
_PREFIXED = re.compile(r"^([a-zA-Z]+)\s*:\s*(\d+)$")
_BARE = re.compile(r"^(\d+)$")
_SUFFIXES = re.compile(r"^(?P<base>[^.@]+?)\s*(?:\.\s*(?P<bit>\d+))?\s*(?:@\s*(?P<unit>\d+))?$")
_STRING = re.compile(r"^string\s*\[\s*(\d+)\s*\]$")
MAX_ADDRESS = 65535
MAX_STRING = 250  # characters: 125 registers, the most one request can read
ADDRESSING = ("zero_based", "modicon")

# type -> (registers, struct code)
REGISTER_TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, "h"), "uint16": (1, "H"),
    "int32": (2, "i"), "uint32": (2, "I"), "float32": (2, "f"),
    "int64": (4, "q"), "uint64": (4, "Q"), "float64": (4, "d"),
}
TYPE_NAMES = ("bool", *REGISTER_TYPES, "string[n]")


class TypeMismatch(ValueError):
    field = "type"


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    table: str  # hr | ir | coil | di
    number: int  # 0-based, as on the wire
    width: int  # registers (or bits) the value spans
    data_type: str
    bit: int | None = None  # bit of a register, for bool tags on hr/ir
    unit: int | None = None  # unit id named in the address; None = the device's

    @property
    def end(self) -> int:
        return self.number + self.width


def string_length(data_type: str) -> int | None:
    """n for `string[n]`, None for any other type."""
    m = _STRING.match(data_type.strip())
    return int(m.group(1)) if m else None


def parse(address: str, data_type: str, device: Any = None) -> ModbusAddress:
    """Parse a tag address for a device; ValueError (TypeMismatch for the type) names the problem."""
    addressing = getattr(device, "addressing", "zero_based")
    text = address.strip()
    m = _SUFFIXES.match(text)
    if not m:
        raise ValueError(_bad(address, addressing))
    base, bit, unit = m.group("base").strip(), m.group("bit"), m.group("unit")
    table, number = _base(address, base, addressing, device)
    if unit is not None:
        unit_id = int(unit)
        highest = 247 if getattr(device, "protocol", None) == "modbus_rtu" else 255
        if not 0 <= unit_id <= highest:
            raise ValueError(f"bad Modbus address {address!r}: unit id {unit_id} is out of range 0-{highest}")
    else:
        unit_id = None
    return _typed(address, table, number, data_type, int(bit) if bit is not None else None, unit_id)


def _bad(address: str, addressing: str) -> str:
    if addressing == "modicon":
        return (f"bad Modbus address {address!r}: expected a Modicon number such as 40001, 30001, 10001, "
                f"00001 or 400001 (optionally .bit and @unit), or <table>:<1-based number> e.g. hr:1")
    return (f"bad Modbus address {address!r}: expected <table>:<number> with table hr, ir, coil or di, "
            f"e.g. hr:100, hr:9.3 (bit 3), hr:100@2 (unit 2)")


def _base(address: str, base: str, addressing: str, device: Any) -> tuple[str, int]:
    """The table and 0-based number of the address without suffixes."""
    if (m := _PREFIXED.match(base)) and m.group(1).lower() in _TABLE_ALIASES:
        table, number = _TABLE_ALIASES[m.group(1).lower()], int(m.group(2))
        if addressing == "modicon":
            if number == 0:
                raise ValueError(f"bad Modbus address {address!r}: this device counts from 1 "
                                 f"(addressing: modicon), so the first {table} is {table}:1")
            number -= 1
        if number > MAX_ADDRESS:
            raise ValueError(f"bad Modbus address {address!r}: beyond register {MAX_ADDRESS}")
        return table, number
    if _BARE.match(base):
        modicon = modicon_number(base)
        if addressing != "modicon":
            name = getattr(device, "name", "the device")
            hint = f", or write {modicon[0]}:{modicon[1]}" if isinstance(modicon, tuple) else ""
            raise ValueError(f"bad Modbus address {address!r}: a bare number is the 1-based Modicon notation; "
                             f"set `addressing: modicon` on device {name}{hint}")
        if isinstance(modicon, str):
            raise ValueError(f"bad Modbus address {address!r}: {modicon}")
        return modicon
    raise ValueError(_bad(address, addressing))


def modicon_number(digits: str) -> tuple[str, int] | str:
    """`40001` -> ("hr", 0); a string says why the number is not Modicon notation."""
    if len(digits) not in (5, 6):
        return "Modicon numbers have 5 digits (40001) or 6 digits (400001)"
    table = _MODICON_TABLES.get(digits[0])
    if table is None:
        return f"the first digit {digits[0]} names no table (0 coil, 1 discrete input, 3 input register, 4 holding register)"
    number = int(digits[1:])
    if number == 0:
        return f"Modicon numbers count from 1: the first is {digits[0]}{'0' * (len(digits) - 2)}1"
    if number - 1 > MAX_ADDRESS:
        return f"beyond register {MAX_ADDRESS}"
    return table, number - 1


def _typed(address: str, table: str, number: int, data_type: str, bit: int | None, unit: int | None) -> ModbusAddress:
    data_type = data_type.strip()
    if table in BIT_TABLES:
        if bit is not None:
            raise ValueError(f"bad Modbus address {address!r}: coils and discrete inputs are single bits, "
                             f"a .bit suffix only fits registers")
        if data_type != "bool":
            raise TypeMismatch(f"type {data_type!r} does not fit {table} {number}: coils and discrete inputs are bool")
        return ModbusAddress(table, number, 1, "bool", None, unit)
    if bit is not None:
        if not 0 <= bit <= 15:
            raise ValueError(f"bad Modbus address {address!r}: bit {bit} is out of range 0-15")
        if data_type != "bool":
            raise TypeMismatch(f"type {data_type!r} does not fit a bit of a register ({address}): use bool")
        return ModbusAddress(table, number, 1, "bool", bit, unit)
    if data_type == "bool":
        raise TypeMismatch(f"type 'bool' on register {address!r} needs a bit number, e.g. {address}.0")
    if (n := string_length(data_type)) is not None:
        if not 1 <= n <= MAX_STRING:
            raise TypeMismatch(f"type {data_type!r}: a string has 1-{MAX_STRING} characters (2 per register)")
        width, data_type = (n + 1) // 2, f"string[{n}]"
    elif data_type in REGISTER_TYPES:
        width = REGISTER_TYPES[data_type][0]
    else:
        raise TypeMismatch(f"type {data_type!r} is not a Modbus type (one of {', '.join(TYPE_NAMES)})")
    if number + width - 1 > MAX_ADDRESS:
        raise ValueError(f"bad Modbus address {address!r}: {data_type} spans {width} registers, beyond register {MAX_ADDRESS}")
    return ModbusAddress(table, number, width, data_type, None, unit)


def notation(table: str, number: int, addressing: str = "zero_based") -> str:
    """A 0-based (table, number) written the way a device with this addressing writes it."""
    if addressing == "modicon":
        digit = {v: k for k, v in _MODICON_TABLES.items()}[table]
        return f"{digit}{number + 1:04d}" if number < 9999 else f"{digit}{number + 1:05d}"
    return f"{table}:{number}"


# ---------------------------------------------------------------- codecs


def _order(raw: bytes, byte_order: str) -> bytes:
    """Bring register bytes in the device's order into big-endian (ABCD) order, or back."""
    if byte_order in ("CDAB", "DCBA"):  # words reversed
        raw = b"".join(raw[i:i + 2] for i in range(len(raw) - 2, -1, -2))
    if byte_order in ("BADC", "DCBA"):  # bytes swapped within each word
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return raw


def _string_bytes(registers: list[int], byte_order: str) -> bytes:
    swap = byte_order in ("BADC", "DCBA")
    return b"".join(r.to_bytes(2, "little" if swap else "big") for r in registers)


@functools.lru_cache(maxsize=None)
def _decoder(data_type: str, byte_order: str) -> Callable[[Sequence[int]], int | float]:
    """One compiled decoder per (type, byte order): this runs for every tag on every poll."""
    width, code = REGISTER_TYPES[data_type]
    # packing each word little-endian swaps its bytes (BADC, DCBA); CDAB and DCBA reverse the words
    words = struct.Struct(f"{'<' if byte_order in ('BADC', 'DCBA') else '>'}{width}H").pack
    value = struct.Struct(">" + code).unpack
    if byte_order in ("CDAB", "DCBA"):
        return lambda registers: value(words(*reversed(registers)))[0]
    return lambda registers: value(words(*registers))[0]


def decode(registers: Sequence[int], data_type: str, byte_order: str = "ABCD") -> int | float | str:
    """Registers (as read, first register first) -> value of a register type or `string[n]`."""
    if data_type.startswith("string") and (n := string_length(data_type)) is not None:
        raw = _string_bytes(list(registers), byte_order)[:n]
        return raw.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ")
    return _decoder(data_type, byte_order)(registers)


def encode(value: int | float | str, data_type: str, byte_order: str = "ABCD") -> list[int]:
    """Inverse of `decode`, for the simulator and tests."""
    if (n := string_length(data_type)) is not None:
        raw = str(value).encode("latin-1", "replace")[:n]
        raw = raw.ljust(((n + 1) // 2) * 2, b"\x00")
        swap = byte_order in ("BADC", "DCBA")
        return [int.from_bytes(raw[i:i + 2], "little" if swap else "big") for i in range(0, len(raw), 2)]
    raw = _order(struct.pack(">" + REGISTER_TYPES[data_type][1], value), byte_order)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def value_of(addr: ModbusAddress, words: list, byte_order: str = "ABCD") -> bool | int | float | str:
    """The raw (unscaled) value of a tag from the words or bits read for exactly its span."""
    if addr.table in BIT_TABLES:
        return bool(words[0])
    if addr.bit is not None:
        return bool((int(words[0]) >> addr.bit) & 1)
    return decode(words, addr.data_type, byte_order)
