"""S7 tag addresses in TIA Portal / Step 7 notation, and value codecs. Pure: no snap7 import.

Address forms (case-insensitive, an optional leading `%` as TIA shows it):

    DB1.DBX0.0   bit 0 of byte 0 of DB1        M0.0   I0.0 / E0.0   Q0.0 / A0.0
    DB1.DBB1     byte 1                        MB1    IB1  / EB1    QB1  / AB1
    DB1.DBW2     word (2 bytes) at byte 2      MW10   IW2  / EW2    QW4  / AW4
    DB1.DBD4     double word (4 bytes) at 4    MD20   ID4  / ED4    QD4  / AD4

E/A are the German mnemonics for inputs/outputs (Eingang/Ausgang).

The address width must fit the data type: X holds BOOL; B holds BYTE, SINT, USINT,
CHAR; W holds WORD, INT, UINT; D holds DWORD, DINT, UDINT, REAL. Values wider than
a double word have no address letter of their own: give their *first byte* with a B
address and the type says how many bytes follow — LREAL, LINT, ULINT, LWORD take 8
bytes, STRING[n] takes n + 2 (S7 string header: max length, current length), e.g.
`DB1.DBB10` with type `LREAL` covers DB1 bytes 10..17. `STRING` alone is STRING[254].
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

AREAS = ("DB", "M", "I", "Q")  # data block, flags (Merker), inputs, outputs
_AREA_MNEMONICS = {"M": "M", "I": "I", "E": "I", "Q": "Q", "A": "Q"}
_WIDTHS = {"X": 0, "B": 1, "W": 2, "D": 4}  # 0: a bit
# S7 addresses a bit as byte * 8 + bit in 24 bits
MAX_BYTE = (1 << 21) - 1

# type -> (bytes, struct code); STRING is sized by its length
FIXED_TYPES: dict[str, tuple[int, str]] = {
    "BYTE": (1, "B"), "USINT": (1, "B"), "SINT": (1, "b"), "CHAR": (1, "c"),
    "WORD": (2, "H"), "UINT": (2, "H"), "INT": (2, "h"),
    "DWORD": (4, "I"), "UDINT": (4, "I"), "DINT": (4, "i"), "REAL": (4, "f"),
    "LWORD": (8, "Q"), "ULINT": (8, "Q"), "LINT": (8, "q"), "LREAL": (8, "d"),
}
# types that start at a B address but span more than one byte
BYTE_RANGE_TYPES = {"LWORD", "ULINT", "LINT", "LREAL", "STRING"}
ALL_TYPES = ["BOOL", *FIXED_TYPES, "STRING[n]"]

_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?$")
_AREA = re.compile(r"^([MIEQA])([BWD])?(\d+)(?:\.(\d+))?$")
_STRING = re.compile(r"^STRING(?:\s*\[\s*(\d+)\s*\])?$")
_EXAMPLES = "e.g. DB1.DBX0.0, DB1.DBW2, DB1.DBD4, M0.0, MW10, I0.1 (E0.1), QW4 (AW4)"


class TypeMismatch(ValueError):
    """The data type is unknown or does not fit the address width; reported on the tag's `type`."""

    field = "type"


@dataclass(frozen=True, slots=True)
class S7Address:
    area: str  # DB | M | I | Q
    db: int  # the DB number, 0 outside data blocks
    start: int  # first byte
    bit: int | None  # bit number for BOOL, else None
    size: int  # bytes to read
    data_type: str  # upper case; STRING for STRING[n]
    length: int = 0  # n of STRING[n]
    text: str = ""  # the address as written, for messages

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def block(self) -> str:
        """The memory block, for messages: `DB7`, `M`, `I`, `Q`."""
        return f"DB{self.db}" if self.area == "DB" else self.area


def parse_type(data_type: str) -> tuple[str, int, int]:
    """`REAL` -> (REAL, 4, 0); `string[20]` -> (STRING, 22, 20). Raises TypeMismatch."""
    name = data_type.strip().upper()
    if name == "BOOL":
        return name, 1, 0
    if name in FIXED_TYPES:
        return name, FIXED_TYPES[name][0], 0
    m = _STRING.match(name)
    if m:
        n = int(m.group(1)) if m.group(1) is not None else 254
        if not 1 <= n <= 254:
            raise TypeMismatch(f"bad S7 type {data_type!r}: STRING[n] needs 1 <= n <= 254")
        return "STRING", n + 2, n
    raise TypeMismatch(f"unknown S7 data type {data_type!r} (one of {', '.join(ALL_TYPES)})")


def parse(address: str, data_type: str, device: Any = None) -> S7Address:
    """Parse a TIA-style address with its data type; raises ValueError (TypeMismatch for the type)."""
    text = address.strip()
    compact = re.sub(r"\s+", "", text).upper().removeprefix("%")
    m = _DB.match(compact)
    if m:
        db, width_letter, byte, bit = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if not 1 <= db <= 65535:
            raise ValueError(f"bad S7 address {address!r}: DB number must be 1..65535")
        area = "DB"
    else:
        m = _AREA.match(compact)
        if not m:
            raise ValueError(f"bad S7 address {address!r}: expected {_EXAMPLES}")
        area, db = _AREA_MNEMONICS[m.group(1)], 0
        width_letter, byte, bit = m.group(2) or "X", int(m.group(3)), m.group(4)
    width = _WIDTHS[width_letter]
    if width == 0:
        if bit is None:
            raise ValueError(f"bad S7 address {address!r}: a bit address needs a bit number, e.g. {text}.0")
        if int(bit) > 7:
            raise ValueError(f"bad S7 address {address!r}: bit number must be 0..7")
    elif bit is not None:
        raise ValueError(f"bad S7 address {address!r}: only bit (X) addresses take a .bit suffix")

    name, size, length = parse_type(data_type)
    _check_fit(text, width, name, data_type)
    if byte + size - 1 > MAX_BYTE:
        raise ValueError(f"bad S7 address {address!r}: beyond byte {MAX_BYTE}")
    return S7Address(area, db, byte, int(bit) if width == 0 else None, size, name, length, text)


def _check_fit(text: str, width: int, name: str, data_type: str) -> None:
    if width == 0:
        if name != "BOOL":
            raise TypeMismatch(f"type {data_type!r} does not fit bit address {text}: a bit address holds BOOL")
        return
    if name == "BOOL":
        raise TypeMismatch(f"type BOOL does not fit {text}: BOOL needs a bit address such as DB1.DBX0.0 or M0.0")
    fits = [t for t, (n, _) in FIXED_TYPES.items() if n == width and t not in BYTE_RANGE_TYPES]
    if name in BYTE_RANGE_TYPES:
        if width != 1:
            raise TypeMismatch(
                f"type {data_type!r} does not fit {text}: give its first byte with a B address "
                f"(e.g. DB1.DBB10); the type sets the width"
            )
        return
    if FIXED_TYPES[name][0] != width:
        kind = {1: "byte (B)", 2: "word (W)", 4: "double word (D)"}[width]
        raise TypeMismatch(
            f"type {data_type!r} ({FIXED_TYPES[name][0]} bytes) does not fit {text}: "
            f"a {kind} address holds {', '.join(fits)}"
        )


# ---------------------------------------------------------------- codecs


def decode(raw: bytes, addr: S7Address) -> bool | int | float | str:
    """The value of `addr` from exactly its `size` bytes (big-endian, as the PLC stores them)."""
    if addr.data_type == "BOOL":
        return bool(raw[0] >> addr.bit & 1)  # type: ignore[operator]
    if addr.data_type == "STRING":
        current = min(raw[1], addr.length)
        return bytes(raw[2:2 + current]).decode("latin-1")
    if addr.data_type == "CHAR":
        return bytes(raw[:1]).decode("latin-1")
    value = struct.unpack(">" + FIXED_TYPES[addr.data_type][1], bytes(raw[:addr.size]))[0]
    if addr.data_type == "REAL":
        return shortest_real(value)
    return value


_F32 = struct.Struct(">f")


def shortest_real(value: float) -> float:
    """The shortest decimal that is the same 32-bit REAL: 0.1, not 0.10000000149011612 (lossless).

    `value` is a REAL widened to a double, so packing it again gives the PLC's bytes.
    """
    if value != value or value in (float("inf"), float("-inf")):
        return value
    raw = _F32.pack(value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if _F32.pack(candidate) == raw:
            return candidate
    return value


def encode(value: Any, addr: S7Address, current: bytes = b"\x00") -> bytes:
    """Inverse of `decode`, for the simulator and tests. A BOOL needs the `current` byte it sits in.

    Integers wrap to the type's width (as a PLC counter does).
    """
    t = addr.data_type
    if t == "BOOL":
        mask = 1 << addr.bit  # type: ignore[operator]
        return bytes([(current[0] | mask) if value else (current[0] & ~mask & 0xFF)])
    if t == "STRING":
        data = str(value).encode("latin-1", "replace")[:addr.length]
        return bytes([addr.length, len(data)]) + data.ljust(addr.length, b"\x00")
    if t == "CHAR":
        return str(value).encode("latin-1", "replace")[:1].ljust(1, b"\x00")
    code = FIXED_TYPES[t][1]
    if code in "fd":
        return struct.pack(">" + code, float(value))
    bits = 8 * addr.size
    n = int(value) % (1 << bits)
    if code.islower() and n >= 1 << (bits - 1):
        n -= 1 << bits
    return struct.pack(">" + code, n)
