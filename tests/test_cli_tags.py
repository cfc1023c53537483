"""`edge-agent tags list|add|remove|read` and `init`: the CLI as a subprocess, against real files
and a real simulated PLC."""

from __future__ import annotations

import difflib
import json
import shutil

import pytest
from conftest import ROOT, FrozenClock, free_port, modbus_line_config, write_config
from service_support import cli
from test_e2e_modbus_mqtt import start_simulator

EXAMPLE = ROOT / "config/example.yaml"
DEFAULT = ROOT / "edge_agent/default.yaml"
ENV = {"MQTT_PASSWORD": "x"}


def only_added(old: str, new: str) -> list[str]:
    """The lines `new` adds to `old`; fails if any line of `old` changed or went away."""
    added = []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        assert not line.startswith("- "), f"line changed or lost: {line!r}"
        if line.startswith("+ "):
            added.append(line[2:])
    return added


async def test_tags_add_and_remove_round_trip_keeps_comments_and_order(tmp_path):
    cfg = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, cfg)
    original = cfg.read_text()
    code, out, err = await cli("tags", "add", "spindle_speed", "--config", str(cfg), "--device", "press-plc",
                               "--address", "hr:200", "--type", "float32", "--unit", "rpm", "--gain", "0.1", env=ENV)
    assert code == 0, err
    assert "added tag spindle_speed" in out
    new = cfg.read_text()
    assert only_added(original, new) == [
        "  - name: spindle_speed", "    device: press-plc", '    address: "hr:200"', "    type: float32",
        "    unit: rpm", "    scale: {gain: 0.1, offset: 0.0}",
    ]
    # inserted at the end of the tag list, before the blank line and the buffer section
    assert new.index("spindle_speed") > new.index("oil_temperature") and new.index("spindle_speed") < new.index("\nbuffer:")
    assert "# coil / di / hr / ir, 0-based" in new and "# raw 253 -> 25.3" in new
    code, out, err = await cli("validate", str(cfg), env=ENV)
    assert code == 0, err

    code, out, err = await cli("tags", "list", "--config", str(cfg), "--json", env=ENV)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["press_running", "press_parts", "oil_temperature", "spindle_speed"]
    assert rows[-1] == {"name": "spindle_speed", "device": "press-plc", "address": "hr:200", "type": "float32",
                        "unit": "rpm", "scale": {"gain": 0.1, "offset": 0.0}, "description": ""}

    code, out, err = await cli("tags", "remove", "spindle_speed", "--config", str(cfg), env=ENV)
    assert code == 0, err
    assert cfg.read_text() == original, "add then remove gives the file back byte for byte"


async def test_tags_add_keeps_a_one_line_per_tag_flow_style(tmp_path):
    cfg = tmp_path / "config.yaml"
    shutil.copy(DEFAULT, cfg)
    original = cfg.read_text()
    code, _, err = await cli("tags", "add", "temp", "--config", str(cfg), "--device", "plc1", "--address", "ir:3",
                             "--type", "int16")
    assert code == 0, err
    assert only_added(original, cfg.read_text()) == [
        '  - {name: temp, device: plc1, address: "ir:3", type: int16}']


@pytest.mark.parametrize("args, message", [
    (["--device", "nope", "--address", "hr:1", "--type", "uint16"], "tags[3].device: unknown device 'nope'"),
    (["--device", "press-plc", "--address", "hr:1", "--type", "uint99"], "tags[3].type:"),
    (["--device", "press-plc", "--address", "zz:1", "--type", "uint16"], "tags[3].address:"),
])
async def test_tags_add_refuses_a_result_that_does_not_validate(tmp_path, args, message):
    cfg = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, cfg)
    before = cfg.read_bytes()
    code, _out, err = await cli("tags", "add", "t_new", "--config", str(cfg), *args, env=ENV)
    assert code == 2
    assert f"{cfg}:" in err and message in err, err
    assert cfg.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"], "no temp file left behind"


async def test_tags_add_duplicate_and_remove_of_a_used_or_unknown_tag_are_refused(tmp_path):
    cfg = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, cfg)
    before = cfg.read_bytes()
    code, _, err = await cli("tags", "add", "press_parts", "--config", str(cfg), "--device", "press-plc",
                             "--address", "hr:1", "--type", "uint16", env=ENV)
    assert code == 2 and "exists already" in err
    code, _, err = await cli("tags", "remove", "press_parts", "--config", str(cfg), env=ENV)
    assert code == 2 and "machines[0].signals.part_counter: unknown tag 'press_parts'" in err, err
    code, _, err = await cli("tags", "remove", "nope", "--config", str(cfg), env=ENV)
    assert code == 2 and "no tag named 'nope'" in err
    assert cfg.read_bytes() == before
    code, _, err = await cli("tags", "remove", "oil_temperature", "--config", str(cfg), "--json", env=ENV)
    assert code == 0, err
    assert "oil_temperature" not in cfg.read_text() and "# the ISA-95 hierarchy" in cfg.read_text()


async def test_tags_add_keeps_the_file_mode(tmp_path):
    cfg = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, cfg)
    cfg.chmod(0o640)
    code, _, err = await cli("tags", "add", "x1", "--config", str(cfg), "--device", "press-plc", "--address", "hr:5",
                             "--type", "uint16", env=ENV)
    assert code == 0, err
    assert cfg.stat().st_mode & 0o777 == 0o640


async def test_tags_read_live_from_a_simulated_plc(tmp_path):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=free_port())
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    clock.run()
    import asyncio

    await asyncio.sleep(0.5)
    clock.freeze()
    try:
        path = write_config(tmp_path / "c.yaml", cfg)
        code, out, err = await cli("tags", "read", "--config", str(path), "--json")
        assert code == 0, err
        rows = {r["name"]: r for r in json.loads(out)}
        assert set(rows) == {"running", "parts"}
        assert rows["parts"]["value"] == machine.total and rows["parts"]["type"] == "uint32"
        assert rows["parts"]["quality"] == "good" and rows["parts"]["read_at"].endswith("Z")
        assert isinstance(rows["running"]["value"], bool) and rows["running"]["device"] == "plc"

        code, out, err = await cli("tags", "read", "parts", "--config", str(path))
        assert code == 0, err
        assert "parts" in out and "good" in out and str(machine.total) in out and "running" not in out

        code, out, err = await cli("tags", "read", "prts", "--config", str(path))
        assert code == 2 and "no tag 'prts'" in err and "did you mean 'parts'" in err
    finally:
        sim.cancel()


async def test_tags_read_from_an_unreachable_plc_exits_1_with_bad_quality(tmp_path):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=free_port())
    path = write_config(tmp_path / "c.yaml", cfg)
    code, out, _err = await cli("tags", "read", "--config", str(path), "--json")
    assert code == 1
    rows = json.loads(out)
    assert {r["quality"] for r in rows} == {"bad"} and "cannot read plc" in rows[0]["error"]


@pytest.mark.parametrize("protocol", ["modbus_tcp", "opcua", "s7"])
async def test_init_writes_a_commented_config_that_validates(tmp_path, protocol):
    out_file = tmp_path / "etc" / "config.yaml"
    code, _, err = await cli("init", "-o", str(out_file), "--protocol", protocol, "--site", "augsburg",
                               "--area", "assembly", "--line", "line3", "--machine", "press01",
                               "--plc-host", "10.0.3.12", "--broker", "mes.plant.example", "--broker-port", "8883")
    assert code == 0, err
    text = out_file.read_text()
    assert "# the ISA-95 hierarchy" in text and "site: augsburg" in text and "host: mes.plant.example" in text
    code, _, err = await cli("validate", str(out_file))
    assert code == 0, err
    code, _, err = await cli("init", "-o", str(out_file), "--protocol", protocol)
    assert code == 1 and "exists" in err, "never overwrites without --force"
    code, _out, err = await cli("init", "-o", str(out_file), "--protocol", "profinet", "--force")
    assert code == 2 and "profinet" in err


async def test_init_with_a_broker_user_takes_the_password_from_the_environment(tmp_path):
    out_file = tmp_path / "config.yaml"
    code, _, err = await cli("init", "-o", str(out_file), "--username", "line3")
    assert code == 0, err
    assert "password: ${MQTT_PASSWORD}" in out_file.read_text()
    code, _, err = await cli("validate", str(out_file), env={"MQTT_PASSWORD": "pw"})
    assert code == 0, err


def test_every_command_has_help():
    from typer.main import get_command
    from typer.testing import CliRunner

    from edge_agent.cli import app

    root = get_command(app)
    paths = []

    def walk(cmd, path):
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + [name])

    walk(root, [])
    assert {"init", "status", "tags", "service", "validate", "run"} <= {p[0] for p in paths if p}
    assert ["tags", "read"] in paths and ["service", "install"] in paths
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
    result = runner.invoke(app, ["--show-completion"], env={"SHELL": "/bin/bash"})
    assert result.exit_code == 0 and "complete" in result.output.lower()


def test_every_listing_has_json():
    from typer.testing import CliRunner

    from edge_agent.cli import app

    runner = CliRunner()
    for path in (["tags", "list"], ["tags", "read"], ["status"], ["service", "install"], ["service", "uninstall"]):
        result = runner.invoke(app, [*path, "--help"])
        assert "--json" in result.output, path


@pytest.mark.parametrize("protocol", ["modbus_tcp", "opcua", "s7"])
async def test_init_then_simulate_then_tags_read_for_every_protocol(tmp_path, protocol):
    """The technician's first ten minutes: a starter config, the simulator on its endpoint, a live read."""
    import asyncio
    import os
    import sys
    import time

    cfg = tmp_path / "config.yaml"
    code, _, err = await cli("init", "-o", str(cfg), "--protocol", protocol, "--plc-host", "127.0.0.1",
                             "--plc-port", str(free_port()))
    assert code == 0, err
    log = open(tmp_path / "sim.log", "wb")  # noqa: ASYNC230, SIM115 -- the simulator process writes it; closed below
    sim = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge_agent", "simulate", "--config", str(cfg),
                                               cwd=ROOT, stdout=log, stderr=log, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 20
        while b"event=simulator_listening" not in (tmp_path / "sim.log").read_bytes():
            assert sim.returncode is None and time.monotonic() < deadline, (tmp_path / "sim.log").read_text()
            await asyncio.sleep(0.1)
        code, out, err = await cli("tags", "read", "--config", str(cfg), "--json")
        assert code == 0, (out, err)
        rows = {r["name"]: r for r in json.loads(out)}
        assert set(rows) == {"running", "parts"}
        assert all(r["quality"] == "good" and r["read_at"].endswith("Z") for r in rows.values()), rows
        assert isinstance(rows["running"]["value"], bool) and isinstance(rows["parts"]["value"], int)
    finally:
        sim.terminate()
        await sim.wait()
        log.close()
