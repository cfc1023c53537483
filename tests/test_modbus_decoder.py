"""The whole-request Modbus decoder gives exactly what decoding each tag on its own gives.

The reference is the per-tag codec (`value_of`, itself checked against hand-written words in
test_modbus_address.py) plus `drivers.base.scaled`; the decoder under test packs the words
once and unpacks every plain member with one struct call, so any slip in the pad bytes,
the byte-order table or the index bookkeeping shows up here.
"""

from __future__ import annotations

import math
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import scaled
from drivers.modbus.address import (
    REGISTER_TYPES,
    ModbusAddress,
    encode,
    parse,
    value_of,
)
from drivers.modbus.decoder import RequestDecoder
from drivers.modbus.planner import plan

BYTE_ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
TYPES = [*REGISTER_TYPES, "string[1]", "string[4]", "string[7]", "bool"]
SPAN = 40  # registers (or bits) a request covers at most here
START = 1000
DEVICE = SimpleNamespace(name="plc", protocol="modbus_tcp", addressing="zero_based")


def reference(addr: ModbusAddress, words: list, start: int, byte_order: str, scale) -> object:
    offset = addr.number - start
    raw = value_of(addr, words[offset:offset + addr.width], byte_order)
    tag = SimpleNamespace(scale=None if scale is None else SimpleNamespace(gain=scale[0], offset=scale[1]))
    return scaled(tag, raw)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@st.composite
def register_requests(draw):
    """Members anywhere in SPAN registers: gaps, overlaps, several bits of one register, strings; words; scales."""
    members = []
    for i in range(draw(st.integers(1, 20))):
        data_type = draw(st.sampled_from(TYPES))
        width = 1 if data_type == "bool" else parse("hr:0", data_type).width
        number = START + draw(st.integers(0, SPAN - width))
        bit = draw(st.integers(0, 15)) if data_type == "bool" else None
        members.append((f"t{i}", ModbusAddress(draw(st.sampled_from(["hr", "ir"])), number, width,
                                               data_type, bit)))
    start = min(a.number for _, a in members)
    count = max(a.end for _, a in members) - start
    words = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    scales = {n: (draw(st.sampled_from([0.5, 2.0, -1.0, 3])), draw(st.sampled_from([0.0, 10.0, -2.5])))
              for n, _ in members if draw(st.booleans())}
    return members, start, count, words, draw(st.sampled_from(BYTE_ORDERS)), scales


@st.composite
def bit_requests(draw):
    members = [(f"t{i}", ModbusAddress(draw(st.sampled_from(["coil", "di"])), START + draw(st.integers(0, SPAN - 1)),
                                       1, "bool"))
               for i in range(draw(st.integers(1, 20)))]
    start = min(a.number for _, a in members)
    count = max(a.end for _, a in members) - start
    padded = (count + 7) // 8 * 8  # pymodbus answers whole bytes
    bits = draw(st.lists(st.booleans(), min_size=padded, max_size=padded))
    return members, start, count, bits


def check(members, start, count, words, byte_order="ABCD", scales=None):
    scales = scales or {}
    decoder = RequestDecoder(members[0][1].table, start, count, members, byte_order, scales)
    assert sorted(decoder.names) == sorted(n for n, _ in members)  # every member exactly once
    got = dict(zip(decoder.names, decoder(words), strict=True))
    for name, addr in members:
        want = reference(addr, words, start, byte_order, scales.get(name))
        assert same(got[name], want), (name, addr, byte_order, got[name], want)
    return decoder


@settings(max_examples=400, deadline=None)
@given(register_requests())
def test_register_request_decoder_equals_the_per_tag_decoder(case):
    members, start, count, words, byte_order, scales = case
    check(members, start, count, words, byte_order, scales)


@settings(max_examples=200, deadline=None)
@given(bit_requests())
def test_bit_request_decoder_equals_the_per_tag_decoder(case):
    members, start, count, bits = case
    check(members, start, count, bits)


@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
def test_every_type_round_trips_through_one_request(byte_order):
    """Values written with `encode` (the simulator's codec) come back from one request, in every byte order."""
    values = {"int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 3_000_000_000,
              "float32": 1.5, "int64": -(2 ** 62) + 7, "uint64": 2 ** 64 - 3, "float64": math.pi,
              "string[7]": "press A"}
    words: dict[int, int] = {}
    members, number = [], 10
    for data_type, value in values.items():
        addr = parse(f"hr:{number}", data_type, DEVICE)
        members.append((data_type, addr))
        words.update(enumerate(encode(value, data_type, byte_order), number))
        number = addr.end + 1  # a gap of one register
    words[number] = 0b1000_0000_0000_0100
    members += [("bit2", parse(f"hr:{number}.2", "bool", DEVICE)), ("bit3", parse(f"hr:{number}.3", "bool", DEVICE)),
                ("bit15", parse(f"hr:{number}.15", "bool", DEVICE))]
    [request] = plan((n, a, 1) for n, a in members)
    block = [words.get(request.start + i, 0xFFFF) for i in range(request.count)]
    decoder = check(request.members, request.start, request.count, block, byte_order)
    got = dict(zip(decoder.names, decoder(block)))
    assert got == {**values, "bit2": True, "bit3": False, "bit15": True}
    assert decoder.names[:8] == tuple(n for n, _ in request.members[:8])  # the numbers in plan order


def test_plain_members_are_one_struct_call_and_only_the_odd_ones_go_per_tag():
    """A typical map: numbers with gaps in one struct; a string and an overlapping number on the side."""
    members = [("a", ModbusAddress("hr", 0, 1, "uint16")), ("b", ModbusAddress("hr", 2, 2, "float32")),
               ("c", ModbusAddress("hr", 3, 1, "int16")),  # overlaps b
               ("s", ModbusAddress("hr", 6, 2, "string[4]")), ("d", ModbusAddress("hr", 8, 4, "uint64"))]
    decoder = RequestDecoder("hr", 0, 12, members, "CDAB", {"a": (0.5, 1.0), "c": (2.0, 0.0)})
    assert decoder.names == ("a", "b", "d", "c", "s")
    assert [a.data_type for _, a in decoder._others] == ["int16", "string[4]"]
    assert struct.calcsize(decoder._plain.__self__.format) == 24  # one Struct over the whole request
    words = [7, 0, *encode(-2.25, "float32", "CDAB"), 0, 0, *encode("ab", "string[4]", "CDAB"),
             *encode(2 ** 40 + 1, "uint64", "CDAB")]
    words[3] = 0x4010  # c: the second word of b, read as int16
    values = dict(zip(decoder.names, decoder(words)))
    assert values["a"] == 4.5 and values["c"] == 32800.0 and values["s"] == "ab" and values["d"] == 2 ** 40 + 1
    assert values["b"] == struct.unpack(">f", struct.pack(">HH", 0x4010, encode(-2.25, "float32", "CDAB")[0]))[0]


def test_more_words_than_asked_are_ignored_and_one_coil_is_a_list():
    decoder = RequestDecoder("hr", 5, 2, [("x", ModbusAddress("hr", 5, 2, "uint32"))])
    assert list(decoder([1, 2, 99, 99])) == [65538]
    assert decoder.single == "x"
    coil = RequestDecoder("coil", 3, 1, [("c", ModbusAddress("coil", 3, 1, "bool"))])
    assert coil([1, 0, 0, 0, 0, 0, 0, 0]) == [True]
