"""Decode every tag of one planned request in one go. Pure: no pymodbus import.

A poll is a handful of requests of up to 125 registers; decoding them tag by tag in
Python cost about as much as pymodbus' own round trip (docs/performance.md). So each
request gets a decoder when the plan is made:

- registers: the words are packed back to bytes with one precompiled `struct.Struct`
  (each word big- or little-endian, see below) and the plain numeric members (int16 ...
  float64 not overlapping an earlier one) come out of one precompiled `struct.Struct`
  with pad bytes over the gaps. All four byte orders are one pack and one unpack:

  | byte order | words packed | values unpacked |
  |---|---|---|
  | ABCD | big-endian `>H` | big-endian |
  | CDAB (words reversed) | little-endian `<H` | little-endian |
  | BADC (bytes swapped in each word) | little-endian `<H` | big-endian |
  | DCBA (both) | big-endian `>H` | little-endian |

  (Reading a value little-endian reverses all its bytes: the words' order and the bytes
  within each word; packing a word little-endian swaps its two bytes back.)
- bits of registers (`hr:9.3`) from a precomputed (register, bit) list;
- coils and discrete inputs: one `itemgetter` over the bit offsets;
- the rest (strings, members overlapping an earlier member) through the per-tag
  `value_of`, the reference the whole-request result must equal (a property test checks it).

Gain/offset are applied to the numeric members from a precomputed index list, exactly
as `drivers.base.scaled` does (bools and strings pass through).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from drivers.modbus.address import BIT_TABLES, REGISTER_TYPES, ModbusAddress, value_of

# (pack each word, unpack values) endianness per byte order
_ENDIAN = {"ABCD": (">", ">"), "CDAB": ("<", "<"), "BADC": ("<", ">"), "DCBA": (">", "<")}


class RequestDecoder:
    """Values of a request's members from the words (or bits) it read; `names` says whose, in the same order.

    `single` is the member's name when the request has exactly one member, else None;
    `bits` says whether it reads bits (coils, discrete inputs) rather than registers.
    """

    __slots__ = (
        "_byte_order",
        "_others",
        "_pack",
        "_pick",
        "_plain",
        "_regbits",
        "_scales",
        "_simple",
        "bits",
        "count",
        "names",
        "single",
    )

    def __init__(self, table: str, start: int, count: int, members: Sequence[tuple[str, ModbusAddress]],
                 byte_order: str = "ABCD", scales: Mapping[str, tuple[float, float]] | None = None):
        scales = scales or {}
        self.count = count
        self.bits = table in BIT_TABLES
        self.single = members[0][0] if len(members) == 1 else None
        self._byte_order = byte_order
        self._pick = self._pack = self._plain = None
        self._regbits: list[tuple[int, int]] = []
        self._others: list[tuple[int, ModbusAddress]] = []
        if table in BIT_TABLES:
            offsets = [a.number - start for _, a in members]
            self._pick = itemgetter(*offsets) if len(offsets) > 1 else _one(offsets[0])
            self.names: tuple[str, ...] = tuple(n for n, _ in members)
            self._scales: list[tuple[int, Any, Any]] = []
            self._simple = False
            return
        pack_endian, endian = _ENDIAN[byte_order]
        fmt, pos = [endian], start
        plain: list[str] = []
        regbits: list[str] = []
        others: list[tuple[str, ModbusAddress]] = []
        for name, addr in sorted(members, key=lambda m: (m[1].number, m[1].width, m[0])):
            if addr.bit is not None:
                regbits.append(name)
                self._regbits.append((addr.number - start, addr.bit))
            elif addr.data_type in REGISTER_TYPES and addr.number >= pos:
                if addr.number > pos:
                    fmt.append(f"{2 * (addr.number - pos)}x")
                fmt.append(REGISTER_TYPES[addr.data_type][1])
                pos = addr.end
                plain.append(name)
            else:  # a string, or a number overlapping an earlier member
                others.append((name, addr))
                self._others.append((addr.number - start, addr))
        self._pack = struct.Struct(f"{pack_endian}{count}H").pack
        self._plain = struct.Struct("".join(fmt)).unpack_from if plain else None
        self.names = (*plain, *regbits, *(n for n, _ in others))
        numeric = [*plain, *(n for n, a in others if a.data_type in REGISTER_TYPES)]
        index = {n: i for i, n in enumerate(self.names)}
        self._scales = [(index[n], *scales[n]) for n in numeric if n in scales]
        self._simple = bool(plain) and not (self._regbits or self._others or self._scales)

    def __call__(self, words: Sequence[Any]) -> Sequence[Any]:
        """The values, in `names` order, from the request's words (registers) or bits, first first.

        `words` must hold at least `count` items; more (bits padded to a byte, a device
        answering more registers than asked) are ignored.
        """
        if self._pick is not None:
            return list(map(bool, self._pick(words)))
        if len(words) != self.count:
            words = words[:self.count]
        if self._simple:  # numbers only, unscaled: the struct's tuple as it is
            return self._plain(self._pack(*words))
        values = list(self._plain(self._pack(*words))) if self._plain is not None else []
        if self._regbits:
            values += [bool((words[i] >> bit) & 1) for i, bit in self._regbits]
        for i, addr in self._others:
            values.append(value_of(addr, words[i:i + addr.width], self._byte_order))
        for i, gain, offset in self._scales:
            values[i] = values[i] * gain + offset
        return values


def _one(offset: int):
    """`itemgetter` with one index returns the item, not a 1-tuple: this returns a 1-tuple."""
    return lambda bits: (bits[offset],)
