"""`edge-agent scan`: range parsing, the scan against a real server, and the command itself."""

from __future__ import annotations

import asyncio
import json
import sys
from types import SimpleNamespace

import pytest
import yaml

from drivers.modbus.scan import interpret, parse_range, render_text, scan
from edge_agent.config import parse_config
from edge_agent.simulator import Simulation
from edge_agent.simulator.modbus import ModbusFrontend
from modbus_support import ROOT, make_config, tcp_device

ZERO = SimpleNamespace(name="plc", addressing="zero_based")
MODICON = SimpleNamespace(name="plc", addressing="modicon")


@pytest.mark.parametrize("device, text, table, expected", [
    (ZERO, "0-99", None, ("hr", 0, 99)),
    (ZERO, "100 - 100", "ir", ("ir", 100, 100)),
    (ZERO, "ir:5-9", None, ("ir", 5, 9)),
    (MODICON, "40001-40100", None, ("hr", 0, 99)),
    (MODICON, "30001-30010", "ir", ("ir", 0, 9)),
    (MODICON, "400001-465536", None, ("hr", 0, 65535)),
    (MODICON, "1-10", None, ("hr", 0, 9)),
    (MODICON, "1-10", "ir", ("ir", 0, 9)),
])
def test_parse_range(device, text, table, expected):
    assert parse_range(text, device, table) == expected


@pytest.mark.parametrize("device, text, table, fragment", [
    (ZERO, "5", None, "expected A-B"),
    (ZERO, "10-5", None, "the end is before the start"),
    (ZERO, "0-65536", None, "beyond register 65535"),
    (ZERO, "ir:0-9", "hr", "names table ir, not --table hr"),
    (MODICON, "40001-30010", None, "same table"),
    (MODICON, "00001-00010", None, "not bits"),
    (MODICON, "40000-40010", None, "count from 1"),
    (MODICON, "40001-40010", "ir", "name table hr, not --table ir"),
    (MODICON, "0-5", None, "counts from 1"),
])
def test_parse_range_errors(device, text, table, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_range(text, device, table)


async def test_scan_reads_every_interpretation_and_steps_around_holes():
    cfg = make_config(tcp_device(), [])
    frontend = ModbusFrontend(cfg.devices[0], [], Simulation(cfg))
    words = [0x0102, 0x0304, 0x42F6, 0xE979, 0x4142, 0xFFFF, 0xFFFE, 0, 0x3FF0, 0]
    frontend.raw.update({("hr", 20 + i): w for i, w in enumerate(words)})
    frontend.invalid.add(("hr", 27))
    await frontend.start()
    try:
        progress = []
        rows = await scan(cfg.devices[0], unit=1, table="hr", start=20, end=29,
                          progress=lambda done, total: progress.append((done, total)))
    finally:
        await frontend.stop()
    assert [r.word for r in rows] == words[:7] + [None] + words[8:]
    assert "illegal data address" in rows[7].error
    assert progress == [(10, 10)]
    assert frontend.requests <= 1 + 2 * 4  # the block, then halves down to the hole
    entries = interpret(rows)
    assert entries[0]["address"] == "hr:20"
    assert entries[0]["ABCD"]["u32"] == 0x01020304
    assert entries[0]["CDAB"]["u32"] == 0x03040102
    assert entries[0]["BADC"]["u32"] == 0x02010403
    assert entries[0]["DCBA"]["u32"] == 0x04030201
    assert entries[2]["ABCD"]["f32"] == pytest.approx(123.456, rel=1e-6)
    assert entries[2]["DCBA"]["u32"] == 0x79E9F642  # 0x42F6 0xE979 read little-endian
    assert (entries[4]["u16"], entries[4]["hex"], entries[4]["ascii"]) == (0x4142, "0x4142", "AB")
    assert (entries[5]["u16"], entries[5]["i16"]) == (65535, -1)
    assert entries[5]["ABCD"]["i32"] == -2
    assert entries[6].get("ABCD") is None  # its partner is unreadable
    assert "error" in entries[7]
    text = render_text(rows)
    assert "9 of 10 registers readable" in text
    assert "hr:27 Modbus exception 2 (illegal data address)" in text


async def test_scan_of_a_long_range_reads_in_chunks_with_progress():
    cfg = make_config(tcp_device(), [])
    frontend = ModbusFrontend(cfg.devices[0], [], Simulation(cfg))
    frontend.raw[("ir", 299)] = 7
    await frontend.start()
    try:
        progress = []
        rows = await scan(cfg.devices[0], unit=1, table="ir", start=0, end=299,
                          progress=lambda done, total: progress.append((done, total)))
    finally:
        await frontend.stop()
    assert len(rows) == 300 and rows[299].word == 7 and all(r.word == 0 for r in rows[:299])
    assert progress == [(125, 300), (250, 300), (300, 300)]
    assert frontend.requests == 3


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_scan_command_json_and_text(tmp_path):
    device = tcp_device(addressing="modicon", unit=3)
    cfg_data = {"plant": {"site": "s", "area": "a", "line": "l"}, "machines": [{"id": "m"}], "devices": [device]}
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(cfg_data))
    cfg = parse_config(path.read_text())
    frontend = ModbusFrontend(cfg.devices[0], [], Simulation(cfg))
    frontend.raw.update({(3, "hr", 0): 0x0001, (3, "hr", 1): 0x86A0})  # 100000 as ABCD u32
    await frontend.start()
    try:
        code, out, err = await run_cli("scan", "plc", "--config", str(path), "--range", "40001-40004", "--json")
        assert code == 0, err
        rows = json.loads(out)
        assert [r["address"] for r in rows] == ["40001", "40002", "40003", "40004"]
        assert rows[0]["ABCD"]["u32"] == 100000 and rows[1]["u16"] == 0x86A0

        code, out, err = await run_cli("scan", "plc", "--config", str(path), "--range", "1-300", "--unit", "3")
        assert code == 0, err
        assert "scanned 125/300 registers" in err and "scanned 300/300 registers" in err
        assert "300 of 300 registers readable" in out
        assert any(line.split()[:2] == ["40001", "1"] and "100000" in line for line in out.splitlines())

        code, out, err = await run_cli("scan", "nope", "--config", str(path), "--range", "1-2")
        assert code == 2 and "no Modbus device 'nope'" in err
        code, out, err = await run_cli("scan", "plc", "--config", str(path), "--range", "40001-30001")
        assert code == 2 and "same table" in err
    finally:
        await frontend.stop()
    code, out, err = await run_cli("scan", "plc", "--config", str(path), "--range", "40001-40002")
    assert code == 1 and f"cannot connect to 127.0.0.1:{device['port']}" in err and "Traceback" not in err
