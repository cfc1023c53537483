"""Modbus config: RTU device model, and bad addresses reported as FILE:LINE: field: message."""

from __future__ import annotations

import pytest

from edge_agent.config import ModbusRtuDevice, ModbusTcpDevice, parse_config
from edge_agent.errors import ConfigError

HEAD = """\
plant: {site: s, area: a, line: l}
machines:
  - id: m1
devices:
  - name: plc
    protocol: modbus_tcp
    host: 127.0.0.1
  - name: old
    protocol: modbus_tcp
    host: 127.0.0.1
    addressing: modicon
  - name: line
    protocol: modbus_rtu
    port: /dev/ttyUSB0
tags:
  - name: t
"""  # the tag's device/address/type follow on lines 17, 18, 19


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "plant.yaml")
    return info.value.problems


@pytest.mark.parametrize("device, address, type_, expected", [
    ("plc", '"40001"', "uint16",
     "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address '40001': a bare number is the 1-based Modicon notation; "
     "set `addressing: modicon` on device plc, or write hr:0"),
    ("old", '"40000"', "uint16",
     "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address '40000': Modicon numbers count from 1: the first is 40001"),
    ("old", '"20001"', "uint16", "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address '20001': the first digit 2 names "
     "no table (0 coil, 1 discrete input, 3 input register, 4 holding register)"),
    ("plc", "hr:9.16", "bool", "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address 'hr:9.16': bit 16 is out of range 0-15"),
    ("plc", "hr:9.3", "uint16",
     "plant.yaml:19: tags[0].type: tag \'t\': type 'uint16' does not fit a bit of a register (hr:9.3): use bool"),
    ("old", '"40010"', "bool",
     "plant.yaml:19: tags[0].type: tag \'t\': type 'bool' on register '40010' needs a bit number, e.g. 40010.0"),
    ("plc", "hr:0", "string[300]",
     "plant.yaml:19: tags[0].type: tag \'t\': type 'string[300]': a string has 1-250 characters (2 per register)"),
    ("line", "hr:0@248", "uint16",
     "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address 'hr:0@248': unit id 248 is out of range 0-247"),
    ("plc", "hr:65535", "float32",
     "plant.yaml:18: tags[0].address: tag \'t\': bad Modbus address 'hr:65535': float32 spans 2 registers, beyond register 65535"),
])
def test_bad_tag_is_reported_with_file_line_and_field(device, address, type_, expected):
    text = HEAD + f"    device: {device}\n    address: {address}\n    type: {type_}\n"
    assert problems(text) == [expected]


def test_good_modbus_tags_load():
    text = HEAD + "    device: old\n    address: \"40010.3\"\n    type: bool\n"
    text += "  - {name: s, device: line, address: 'hr:10@3', type: 'string[8]'}\n"
    text += "  - {name: c, device: line, address: 'hr:0', type: int16, unit: °C, scale: {gain: 0.1, offset: -5}}\n"
    cfg = parse_config(text, "plant.yaml")
    assert [t.name for t in cfg.tags] == ["t", "s", "c"]
    assert cfg.tags[2].unit == "°C" and cfg.tags[2].scale.gain == 0.1


RTU_HEAD = """\
plant: {site: s, area: a, line: l}
machines: [{id: m1}]
devices:
  - name: line
    protocol: modbus_rtu
"""


def test_rtu_device_fields_and_defaults():
    cfg = parse_config(RTU_HEAD + "    port: /dev/ttyUSB0\n    parity: none\n    baud_rate: 9600\n    stop_bits: 2\n")
    d = cfg.devices[0]
    assert isinstance(d, ModbusRtuDevice)
    assert (d.port, d.baud_rate, d.parity, d.stop_bits, d.data_bits, d.unit) == ("/dev/ttyUSB0", 9600, "N", 2, 8, 1)
    assert (d.byte_order, d.addressing, d.bad_tag_retry) == ("ABCD", "zero_based", 60.0)
    defaults = parse_config(RTU_HEAD + "    port: COM3\n").devices[0]
    assert (defaults.baud_rate, defaults.parity, defaults.stop_bits) == (19200, "E", 1)  # Modbus serial line defaults
    tcp = ModbusTcpDevice(name="p", protocol="modbus_tcp", host="h")
    assert (tcp.addressing, tcp.byte_order) == ("zero_based", "ABCD")


@pytest.mark.parametrize("lines, expected", [
    ("    port: /dev/ttyUSB0\n    parity: X\n",
     "plant.yaml:7: devices[0].parity: Input should be 'N', 'E' or 'O' (got 'X')"),
    ("    port: /dev/ttyUSB0\n    unit: 0\n",
     "plant.yaml:7: devices[0].unit: Input should be greater than or equal to 1 (got 0)"),
    ("    port: /dev/ttyUSB0\n    stop_bits: 3\n", "plant.yaml:7: devices[0].stop_bits: Input should be 1 or 2 (got 3)"),
    ("    port: /dev/ttyUSB0\n    addressing: one_based\n",
     "plant.yaml:7: devices[0].addressing: Input should be 'zero_based' or 'modicon' (got 'one_based')"),
    ("    baud_rate: 9600\n", "plant.yaml:4: devices[0].port: required field missing"),
])
def test_bad_rtu_device(lines, expected):
    assert problems(RTU_HEAD + lines) == [expected]
