"""S7 addresses in TIA Portal notation: every form parses to the right area/byte/bit/width; misfits are refused."""

from __future__ import annotations

import struct

import pytest
import snap7.util as su

from drivers.s7.address import S7Address, TypeMismatch, decode, encode, parse


@pytest.mark.parametrize(
    ("address", "data_type", "area", "db", "start", "bit", "size"),
    [
        ("DB1.DBX0.0", "BOOL", "DB", 1, 0, 0, 1),
        ("DB1.DBX3.7", "bool", "DB", 1, 3, 7, 1),
        ("DB1.DBB1", "BYTE", "DB", 1, 1, None, 1),
        ("DB1.DBW2", "INT", "DB", 1, 2, None, 2),
        ("DB1.DBD4", "REAL", "DB", 1, 4, None, 4),
        ("%DB10.DBD4", "DINT", "DB", 10, 4, None, 4),
        ("db65535.dbw100", "UINT", "DB", 65535, 100, None, 2),
        (" DB1 . DBB 10 ", "LREAL", "DB", 1, 10, None, 8),
        ("DB1.DBB10", "STRING[20]", "DB", 1, 10, None, 22),
        ("DB1.DBB10", "STRING", "DB", 1, 10, None, 256),
        ("M0.0", "BOOL", "M", 0, 0, 0, 1),
        ("MB1", "BYTE", "M", 0, 1, None, 1),
        ("MW10", "WORD", "M", 0, 10, None, 2),
        ("MD20", "UDINT", "M", 0, 20, None, 4),
        ("I0.0", "BOOL", "I", 0, 0, 0, 1),
        ("E0.1", "BOOL", "I", 0, 0, 1, 1),
        ("IW2", "INT", "I", 0, 2, None, 2),
        ("EW2", "INT", "I", 0, 2, None, 2),
        ("ED8", "DWORD", "I", 0, 8, None, 4),
        ("Q0.0", "BOOL", "Q", 0, 0, 0, 1),
        ("A0.5", "BOOL", "Q", 0, 0, 5, 1),
        ("QW4", "UINT", "Q", 0, 4, None, 2),
        ("AW4", "UINT", "Q", 0, 4, None, 2),
        ("AB3", "USINT", "Q", 0, 3, None, 1),
        ("%QD12", "REAL", "Q", 0, 12, None, 4),
    ],
)
def test_address_forms(address, data_type, area, db, start, bit, size):
    a = parse(address, data_type)
    assert (a.area, a.db, a.start, a.bit, a.size) == (area, db, start, bit, size)


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("DB1.DBX0", "needs a bit number"),
        ("DB1.DBX0.8", "bit number must be 0..7"),
        ("DB1.DBW2.1", r"only bit \(X\) addresses"),
        ("DB0.DBW2", "DB number must be 1..65535"),
        ("DB1.DBQ2", "expected e.g. DB1.DBX0.0"),
        ("DB1,W2", "expected e.g. DB1.DBX0.0"),
        ("hr:100", "expected e.g. DB1.DBX0.0"),
        ("M10", "needs a bit number"),
        ("PIW256", "expected e.g."),
        ("", "expected e.g."),
    ],
)
def test_bad_addresses(address, message):
    with pytest.raises(ValueError, match=message) as info:
        parse(address, "BOOL")
    assert not isinstance(info.value, TypeMismatch)


@pytest.mark.parametrize(
    ("address", "data_type", "message"),
    [
        ("DB1.DBW2", "DINT", r"'DINT' \(4 bytes\) does not fit DB1.DBW2: a word \(W\) address holds WORD, UINT, INT"),
        ("DB1.DBD4", "INT", r"does not fit DB1.DBD4: a double word \(D\) address holds DWORD, UDINT, DINT, REAL"),
        ("MB1", "WORD", "does not fit MB1"),
        ("DB1.DBX0.0", "INT", "a bit address holds BOOL"),
        ("MW2", "BOOL", "BOOL needs a bit address"),
        ("DB1.DBD4", "LREAL", "give its first byte with a B address"),
        ("DB1.DBW4", "STRING[10]", "give its first byte with a B address"),
        ("DB1.DBB0", "STRING[255]", r"STRING\[n\] needs 1 <= n <= 254"),
        ("DB1.DBB0", "STRING[0]", r"STRING\[n\] needs"),
        ("DB1.DBD0", "FLOAT", "unknown S7 data type 'FLOAT'"),
        ("DB1.DBW0", "int16", "unknown S7 data type"),
    ],
)
def test_types_that_do_not_fit(address, data_type, message):
    with pytest.raises(TypeMismatch, match=message) as info:
        parse(address, data_type)
    assert info.value.field == "type"


def test_address_beyond_the_24_bit_bit_address_is_refused():
    parse("DB1.DBB2097151", "BYTE")
    with pytest.raises(ValueError, match="beyond byte"):
        parse("DB1.DBB2097150", "LREAL")


# Bytes written with python-snap7's own setters (an implementation independent of ours) decode right.
CASES = [
    ("DB1.DBX0.5", "BOOL", lambda b: su.set_bool(b, 0, 5, True), True),
    ("DB1.DBB0", "BYTE", lambda b: su.set_byte(b, 0, 0xA5), 0xA5),
    ("DB1.DBB0", "SINT", lambda b: su.set_sint(b, 0, -7), -7),
    ("DB1.DBB0", "USINT", lambda b: su.set_usint(b, 0, 250), 250),
    ("DB1.DBB0", "CHAR", lambda b: su.set_char(b, 0, "Z"), "Z"),
    ("DB1.DBW0", "WORD", lambda b: su.set_word(b, 0, 0xBEEF), 0xBEEF),
    ("DB1.DBW0", "INT", lambda b: su.set_int(b, 0, -12345), -12345),
    ("DB1.DBW0", "UINT", lambda b: su.set_uint(b, 0, 54321), 54321),
    ("DB1.DBD0", "DWORD", lambda b: su.set_dword(b, 0, 0xDEADBEEF), 0xDEADBEEF),
    ("DB1.DBD0", "DINT", lambda b: su.set_dint(b, 0, -2_000_000_000), -2_000_000_000),
    ("DB1.DBD0", "UDINT", lambda b: su.set_udint(b, 0, 4_000_000_000), 4_000_000_000),
    ("DB1.DBD0", "REAL", lambda b: su.set_real(b, 0, 1.5), 1.5),
    ("DB1.DBB0", "LREAL", lambda b: su.set_lreal(b, 0, -1234.5678), -1234.5678),
    ("DB1.DBB0", "LINT", lambda b: su.set_lint(b, 0, -(2**40)), -(2**40)),
    ("DB1.DBB0", "STRING[12]", lambda b: su.set_string(b, 0, "Hallo Welt", 12), "Hallo Welt"),
]


@pytest.mark.parametrize(("address", "data_type", "write", "value"), CASES, ids=[c[1] for c in CASES])
def test_codec_against_snap7_setters(address, data_type, write, value):
    addr = parse(address, data_type)
    raw = bytearray(addr.size)
    write(raw)
    assert decode(bytes(raw), addr) == value
    if not data_type.startswith("STRING"):  # snap7 pads strings with spaces, we with zeros
        assert encode(value, addr, b"\x00") == bytes(raw)
    else:
        assert decode(encode(value, addr), addr) == value


def test_string_reads_the_current_length_and_encode_wraps_integers():
    addr = parse("DB1.DBB0", "STRING[5]")
    assert decode(bytes([5, 3]) + b"abcXY", addr) == "abc"
    assert decode(bytes([5, 9]) + b"abcde", addr) == "abcde"  # a corrupt length is capped at n
    assert encode(70000, parse("MW0", "INT")) == struct.pack(">h", 70000 - 65536)
    assert encode(-1, parse("MD0", "UDINT")) == b"\xff\xff\xff\xff"
    assert encode(False, parse("M0.1", "BOOL"), b"\xff") == b"\xfd"


def test_real_is_the_shortest_decimal_of_the_same_32_bit_value():
    addr = parse("DB1.DBD0", "REAL")
    for value in (0.1, 23.7, -1e-7, 3.4028235e38, 16777217.0):
        raw = struct.pack(">f", value)
        got = decode(raw, addr)
        assert struct.pack(">f", got) == raw  # lossless
        assert len(repr(got)) <= len(repr(struct.unpack(">f", raw)[0]))
    assert decode(struct.pack(">f", 0.1), addr) == 0.1
    assert decode(struct.pack(">f", 23.7), addr) == 23.7


def test_address_is_frozen_and_names_its_block():
    a = parse("DB7.DBW2", "INT")
    assert isinstance(a, S7Address) and a.block == "DB7" and a.end == 4 and a.text == "DB7.DBW2"
    assert parse("MW2", "INT").block == "M"
