"""The whole-range S7 decoder gives exactly what decoding each tag on its own gives."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.s7.address import FIXED_TYPES, S7Address, decode, parse_type
from drivers.s7.decoder import RangeDecoder

TYPES = ["BOOL", *FIXED_TYPES, "STRING[4]", "STRING[1]"]
START = 100  # the range's first byte in the DB


@st.composite
def ranges(draw):
    """Members anywhere in 64 bytes (gaps, overlaps, several bits of a byte), the bytes, some scales."""
    members = []
    for i in range(draw(st.integers(1, 25))):
        name, size, length = parse_type(draw(st.sampled_from(TYPES)))
        start = START + draw(st.integers(0, 64 - size))
        bit = draw(st.integers(0, 7)) if name == "BOOL" else None
        members.append((f"t{i}", S7Address("DB", 1, start, bit, size, name, length, f"t{i}")))
    data = draw(st.binary(min_size=64, max_size=64))
    scales = {n: (draw(st.sampled_from([0.5, 2.0, -1.0])), draw(st.sampled_from([0.0, 10.0])))
              for n, _ in members if draw(st.booleans())}
    return members, data, scales


def reference(addr: S7Address, data: bytes, scale):
    value = decode(data[addr.start - START:addr.end - START], addr)
    if scale is None or isinstance(value, (bool, str)):
        return value
    return value * scale[0] + scale[1]


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(ranges())
def test_range_decoder_equals_the_per_tag_decoder(case):
    members, data, scales = case
    decoder = RangeDecoder(START, members, scales)
    assert sorted(decoder.names) == sorted(n for n, _ in members)  # every member once
    got = dict(zip(decoder.names, decoder(bytearray(data)), strict=True))
    for name, addr in members:
        want = reference(addr, data, scales.get(name))
        assert same(got[name], want), (name, addr, got[name], want)


def test_plain_members_come_from_one_struct_call_and_reals_are_shortest():
    """A typical DB: a bit, a counter, a REAL and INTs with gaps; 0.1 stays 0.1, not 0.10000000149."""
    def at(start, t, bit=None):
        name, size, length = parse_type(t)
        return S7Address("DB", 1, start, bit, size, name, length, "")

    members = [("run", at(0, "BOOL", 0)), ("fault", at(0, "BOOL", 3)), ("parts", at(2, "UDINT")),
               ("speed", at(6, "REAL")), ("temp", at(12, "INT"))]
    data = bytes([0b1001, 0, 0, 1, 0, 2]) + bytes.fromhex("3dcccccd") + bytes(2) + (-7).to_bytes(2, "big", signed=True)
    values = dict(zip(RangeDecoder(0, members, {"temp": (0.5, 0.0)}).names,
                      RangeDecoder(0, members, {"temp": (0.5, 0.0)})(data)))
    assert values == {"run": True, "fault": True, "parts": 65538, "speed": 0.1, "temp": -3.5}
