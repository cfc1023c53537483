"""Decode every tag of one planned byte range in one go. Pure: no snap7 import.

A poll of S7 tags is a handful of byte ranges; decoding them tag by tag in Python cost
more than the read itself (docs/performance.md). So each range gets a decoder when the
plan is made: its plain numeric members (fixed-width, not overlapping) come out of one
precompiled `struct.Struct` call with pad bytes over the gaps, bits come from a
precomputed (byte, mask) list, and only the rest (CHAR, STRING, members overlapping
others) go through the per-tag `decode`. The result must equal `decode` per tag; a
property test checks exactly that.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from drivers.s7.address import FIXED_TYPES, S7Address, decode, shortest_real

# fixed-width types a struct code decodes exactly (CHAR is bytes -> str: on the side)
_PLAIN = {t: code for t, (_, code) in FIXED_TYPES.items() if t != "CHAR"}


class RangeDecoder:
    """Values of a range's members from the range's bytes; `names` says whose, in the same order."""

    __slots__ = ("names", "_plain", "_reals", "_bits", "_others", "_scales")

    def __init__(self, start: int, members: Sequence[tuple[str, S7Address]],
                 scales: Mapping[str, tuple[float, float]] | None = None):
        scales = scales or {}
        fmt, pos = [">"], start
        plain: list[tuple[str, S7Address]] = []
        bits: list[tuple[str, int, int]] = []  # (name, byte offset in the range, mask)
        others: list[tuple[str, S7Address]] = []
        for name, addr in sorted(members, key=lambda m: (m[1].start, m[1].end)):
            if addr.data_type == "BOOL":
                bits.append((name, addr.start - start, 1 << (addr.bit or 0)))
            elif addr.data_type in _PLAIN and addr.start >= pos:
                if addr.start > pos:
                    fmt.append(f"{addr.start - pos}x")
                fmt.append(_PLAIN[addr.data_type])
                pos = addr.end
                plain.append((name, addr))
            else:
                others.append((name, addr))
        self._plain = struct.Struct("".join(fmt)) if plain else None
        self._reals = [i for i, (_, a) in enumerate(plain) if a.data_type == "REAL"]
        self._bits = [(offset, mask) for _, offset, mask in bits]
        self._others = [(a.start - start, a) for _, a in others]
        self.names: tuple[str, ...] = tuple([n for n, _ in plain] + [n for n, *_ in bits] + [n for n, _ in others])
        # gain/offset of numeric members; bools and strings pass through unscaled (drivers.base.scaled)
        self._scales = [(i, *scales[n]) for i, n in enumerate(self.names[:len(plain)]) if n in scales]
        self._scales += [(i, *scales[n]) for i, (n, a) in enumerate(others, len(plain) + len(bits))
                         if n in scales and a.data_type not in ("CHAR", "STRING")]

    def __call__(self, data: bytes | bytearray) -> list[Any]:
        """The values, in `names` order, from `data`: the range's bytes from its first."""
        values = list(self._plain.unpack_from(data)) if self._plain is not None else []
        for i in self._reals:
            values[i] = shortest_real(values[i])
        if self._bits:
            values += [bool(data[offset] & mask) for offset, mask in self._bits]
        for offset, addr in self._others:
            values.append(decode(bytes(data[offset:offset + addr.size]), addr))
        for i, gain, offset in self._scales:
            values[i] = values[i] * gain + offset
        return values
