"""Modbus address parsing and value codecs (pure). Expected register words are written out
by hand from the IEEE/two's-complement bytes, so a codec bug cannot hide behind its own inverse."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from drivers.modbus.address import ModbusAddress, TypeMismatch, decode, encode, notation, parse, value_of

ZERO = SimpleNamespace(name="plc", protocol="modbus_tcp", addressing="zero_based")
MODICON = SimpleNamespace(name="plc", protocol="modbus_tcp", addressing="modicon")
RTU = SimpleNamespace(name="line", protocol="modbus_rtu", addressing="zero_based")


@pytest.mark.parametrize("device, address, type_, expected", [
    (ZERO, "hr:100", "uint16", ModbusAddress("hr", 100, 1, "uint16")),
    (ZERO, " HR : 4 ", "int32", ModbusAddress("hr", 4, 2, "int32")),
    (ZERO, "holding:1", "float64", ModbusAddress("hr", 1, 4, "float64")),
    (ZERO, "ir:5", "int16", ModbusAddress("ir", 5, 1, "int16")),
    (ZERO, "coil:3", "bool", ModbusAddress("coil", 3, 1, "bool")),
    (ZERO, "di:7", "bool", ModbusAddress("di", 7, 1, "bool")),
    (ZERO, "hr:9.3", "bool", ModbusAddress("hr", 9, 1, "bool", bit=3)),
    (ZERO, "ir:0.15", "bool", ModbusAddress("ir", 0, 1, "bool", bit=15)),
    (ZERO, "hr:100@2", "uint16", ModbusAddress("hr", 100, 1, "uint16", unit=2)),
    (ZERO, "hr:9.3@7", "bool", ModbusAddress("hr", 9, 1, "bool", bit=3, unit=7)),
    (ZERO, "hr:10", "string[10]", ModbusAddress("hr", 10, 5, "string[10]")),
    (ZERO, "hr:10", "string[ 7 ]", ModbusAddress("hr", 10, 4, "string[7]")),
    (ZERO, "hr:65532", "uint64", ModbusAddress("hr", 65532, 4, "uint64")),
    (MODICON, "40001", "uint16", ModbusAddress("hr", 0, 1, "uint16")),
    (MODICON, "49999", "uint16", ModbusAddress("hr", 9998, 1, "uint16")),
    (MODICON, "30001", "int32", ModbusAddress("ir", 0, 2, "int32")),
    (MODICON, "10001", "bool", ModbusAddress("di", 0, 1, "bool")),
    (MODICON, "00001", "bool", ModbusAddress("coil", 0, 1, "bool")),
    (MODICON, "400001", "uint16", ModbusAddress("hr", 0, 1, "uint16")),
    (MODICON, "465536", "uint16", ModbusAddress("hr", 65535, 1, "uint16")),
    (MODICON, "310000", "uint16", ModbusAddress("ir", 9999, 1, "uint16")),
    (MODICON, "40010.3", "bool", ModbusAddress("hr", 9, 1, "bool", bit=3)),
    (MODICON, "40001@5", "uint16", ModbusAddress("hr", 0, 1, "uint16", unit=5)),
    (MODICON, "hr:1", "uint16", ModbusAddress("hr", 0, 1, "uint16")),
    (MODICON, "coil:10", "bool", ModbusAddress("coil", 9, 1, "bool")),
    (RTU, "hr:0@247", "uint16", ModbusAddress("hr", 0, 1, "uint16", unit=247)),
])
def test_parse(device, address, type_, expected):
    assert parse(address, type_, device) == expected


@pytest.mark.parametrize("device, address, type_, kind, fragment", [
    (ZERO, "40001", "uint16", ValueError, "set `addressing: modicon` on device plc, or write hr:0"),
    (ZERO, "hr100", "uint16", ValueError, "expected <table>:<number>"),
    (ZERO, "xx:1", "uint16", ValueError, "expected <table>:<number>"),
    (ZERO, "hr:65536", "uint16", ValueError, "beyond register 65535"),
    (ZERO, "hr:65535", "uint32", ValueError, "beyond register 65535"),
    (ZERO, "hr:9.16", "bool", ValueError, "bit 16 is out of range 0-15"),
    (ZERO, "coil:1.2", "bool", ValueError, "a .bit suffix only fits registers"),
    (ZERO, "hr:100@256", "uint16", ValueError, "unit id 256 is out of range 0-255"),
    (RTU, "hr:100@248", "uint16", ValueError, "unit id 248 is out of range 0-247"),
    (MODICON, "40000", "uint16", ValueError, "count from 1: the first is 40001"),
    (MODICON, "400000", "uint16", ValueError, "the first is 400001"),
    (MODICON, "20001", "uint16", ValueError, "first digit 2 names no table"),
    (MODICON, "4001", "uint16", ValueError, "5 digits (40001) or 6 digits"),
    (MODICON, "465537", "uint16", ValueError, "beyond register 65535"),
    (MODICON, "hr:0", "uint16", ValueError, "the first hr is hr:1"),
    (ZERO, "hr:9.3", "uint16", TypeMismatch, "does not fit a bit of a register"),
    (ZERO, "hr:9", "bool", TypeMismatch, "needs a bit number, e.g. hr:9.0"),
    (ZERO, "coil:1", "uint16", TypeMismatch, "coils and discrete inputs are bool"),
    (MODICON, "10001", "int16", TypeMismatch, "coils and discrete inputs are bool"),
    (ZERO, "hr:1", "float", TypeMismatch, "not a Modbus type"),
    (ZERO, "hr:1", "string[0]", TypeMismatch, "1-250 characters"),
    (ZERO, "hr:1", "string[251]", TypeMismatch, "1-250 characters"),
])
def test_parse_errors(device, address, type_, kind, fragment):
    with pytest.raises(kind) as info:
        parse(address, type_, device)
    assert fragment in str(info.value)
    if kind is TypeMismatch:
        assert info.value.field == "type"  # config errors point at the type field


# value -> register words per byte order, written out from the big-endian bytes
VECTORS = [
    ("float32", 123.456, {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
                          "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}),
    ("uint32", 0x01020304, {"ABCD": [0x0102, 0x0304], "CDAB": [0x0304, 0x0102],
                            "BADC": [0x0201, 0x0403], "DCBA": [0x0403, 0x0201]}),
    ("int32", -2, {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF],
                   "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("uint64", 0x0102030405060708, {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
                                    "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("int64", -2, {"ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                   "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    ("float64", 1.0, {"ABCD": [0x3FF0, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF0],
                      "BADC": [0xF03F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF03F]}),
    ("int16", -1, {o: [0xFFFF] for o in ("ABCD", "CDAB", "BADC", "DCBA")}),
    ("string[4]", "ABCD", {"ABCD": [0x4142, 0x4344], "CDAB": [0x4142, 0x4344],
                           "BADC": [0x4241, 0x4443], "DCBA": [0x4241, 0x4443]}),
    ("string[3]", "ABC", {"ABCD": [0x4142, 0x4300], "BADC": [0x4241, 0x0043]}),
]


@pytest.mark.parametrize("data_type, value, by_order", VECTORS, ids=[v[0] for v in VECTORS])
def test_codecs_against_hand_written_words(data_type, value, by_order):
    for order, words in by_order.items():
        decoded = decode(words, data_type, order)
        if data_type == "float32":
            assert math.isclose(decoded, value, rel_tol=1e-7), order
        else:
            assert decoded == value, order
        assert encode(value, data_type, order) == words, order


def test_string_ends_at_nul_and_drops_trailing_spaces():
    words = [0x5052, 0x4553, 0x5320, 0x2000, 0x4142]  # "PRESS  \0AB"
    assert decode(words, "string[10]") == "PRESS"
    assert decode([0x2041, 0x2020], "string[4]") == " A"  # leading space kept


def test_bits_and_bools():
    assert value_of(ModbusAddress("hr", 9, 1, "bool", bit=3), [0b1000]) is True
    assert value_of(ModbusAddress("hr", 9, 1, "bool", bit=4), [0b1000]) is False
    assert value_of(ModbusAddress("hr", 9, 1, "bool", bit=15), [0x8000]) is True
    assert value_of(ModbusAddress("coil", 0, 1, "bool"), [True]) is True


def test_notation():
    assert notation("hr", 0) == "hr:0"
    assert notation("hr", 0, "modicon") == "40001"
    assert notation("ir", 9998, "modicon") == "39999"
    assert notation("ir", 9999, "modicon") == "310000"
    assert notation("coil", 0, "modicon") == "00001"
