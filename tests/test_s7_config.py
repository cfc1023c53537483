"""S7 config: bad addresses and types are config errors naming file, line and tags[i].address / .type."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.s7.planner import DEFAULT_MAX_GAP
from edge_agent.config import S7Device, load_config, parse_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
plant: {site: s, area: a, line: l}
machines: [{id: m}]
devices:
  - name: plc
    protocol: s7
    host: 192.0.2.1
tags:
  - {name: ok_tag, device: plc, address: DB1.DBW0, type: INT}
"""  # the tag under test is tags[1], on line 9


@pytest.mark.parametrize(
    ("address", "data_type", "field", "message"),
    [
        ("DB1.DBQ2", "INT", "address", "bad S7 address 'DB1.DBQ2': expected e.g. DB1.DBX0.0"),
        ("DB1.DBX0.9", "BOOL", "address", "bad S7 address 'DB1.DBX0.9': bit number must be 0..7"),
        ("MW10", "DINT", "type", "type 'DINT' (4 bytes) does not fit MW10: a word (W) address holds WORD, UINT, INT"),
        ("DB1.DBD4", "LREAL", "type", "type 'LREAL' does not fit DB1.DBD4: give its first byte with a B address"),
        ("QW4", "BOOL", "type", "type BOOL does not fit QW4: BOOL needs a bit address"),
        ("DB1.DBB0", "STRING[300]", "type", "bad S7 type 'STRING[300]': STRING[n] needs 1 <= n <= 254"),
        ("E0.0", "FLOAT", "type", "unknown S7 data type 'FLOAT'"),
    ],
)
def test_bad_tag_names_file_line_and_field(address, data_type, field, message):
    text = HEAD + f"  - {{name: bad_tag, device: plc, address: '{address}', type: '{data_type}'}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "line7.yaml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"line7.yaml:9: tags[1].{field}: tag 'bad_tag': {message}"), info.value.problems


def test_every_bad_tag_is_reported_at_once_on_its_own_line():
    text = HEAD + "  - name: first\n    device: plc\n    address: DB1.DBW\n    type: INT\n" \
                  "  - name: second\n    device: plc\n    address: MW2\n    type: REAL\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "line7.yaml")
    assert [p.split(": ", 2)[:2] for p in info.value.problems] == [
        ["line7.yaml:11", "tags[1].address"], ["line7.yaml:16", "tags[2].type"]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("    remote_tsap: 'xx.01'", "devices[0].remote_tsap: not a TSAP: 'xx.01'"),
        ("    pdu_size: 100", "devices[0].pdu_size: Input should be greater than or equal to 240"),
        ("    max_items: 21", "devices[0].max_items: Input should be less than or equal to 20"),
        ("    rack: 9", "devices[0].rack: Input should be less than or equal to 7"),
        ("    connection_type: HMI", "devices[0].connection_type: Input should be 'PG', 'OP' or 'S7_BASIC'"),
    ],
)
def test_bad_device_options_name_their_line(line, message):
    lines = HEAD.splitlines()
    lines.insert(6, line)  # after `host:`, line 7
    with pytest.raises(ConfigError) as info:
        parse_config("\n".join(lines) + "\n", "line7.yaml")
    assert info.value.problems[0].startswith(f"line7.yaml:7: {message}"), info.value.problems


def test_device_defaults_and_tsap_notations():
    d = S7Device(name="p", protocol="s7", host="h")
    assert (d.port, d.rack, d.slot, d.pdu_size, d.max_gap, d.max_items) == (102, 0, 1, 480, DEFAULT_MAX_GAP, 20)
    assert d.local_tsap is None and d.remote_tsap is None and d.connection_type == "PG"
    for notation in ("03.01", "0x0301", "0301", 0x0301):
        assert S7Device(name="p", protocol="s7", host="h", remote_tsap=notation).remote_tsap == 0x0301
    assert S7Device(name="p", protocol="s7", host="h", cpu_state_interval="500ms").cpu_state_interval == 0.5
    assert S7Device(name="p", protocol="s7", host="h", cpu_state_interval=0).cpu_state_interval == 0


def test_every_s7_option_is_documented():
    for name, info in S7Device.model_fields.items():
        if name not in ("protocol", "name", "poll_interval", "timeout"):
            assert info.description, f"S7Device.{name} has no description"


def test_shipped_s7_example_is_valid_and_uses_every_address_family():
    cfg = load_config(ROOT / "config" / "s7-example.yaml")
    addresses = " ".join(t.address for t in cfg.tags)
    for family in ("DBX", "DBD", "DBW", "DBB", "E", "A", "MW", "IW"):
        assert family in addresses
    assert {t.type for t in cfg.tags} >= {"BOOL", "UDINT", "REAL", "INT", "LREAL", "STRING[16]"}
