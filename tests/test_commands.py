"""The commands behind the README: `edge-agent simulate` as a process and the `make run` demo."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import yaml

from conftest import ROOT, free_port, modbus_line_config, wait_port, write_config
from drivers.modbus.driver import ModbusDriver
from edge_agent.config import parse_config


async def test_simulate_serves_the_machine_on_the_configured_endpoint(tmp_path):
    port = free_port()
    cfg = modbus_line_config(tmp_path, modbus_port=port, mqtt_port=free_port())
    path = write_config(tmp_path / "sim.yaml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "simulate", "--config", str(path),
                             "--cycle-time", "0.1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await asyncio.to_thread(wait_port, port, 15)
        parsed = parse_config(yaml.safe_dump(cfg))
        driver = ModbusDriver(parsed.devices[0], parsed.tags_of("plc"))
        await driver.connect()
        first = {s.tag: s.value for s in await driver.read()}
        await asyncio.sleep(1.0)
        second = {s.tag: s.value for s in await driver.read()}
        await driver.close()
        assert second["parts"] > first["parts"], "the simulated machine produces parts over time"
        assert isinstance(second["running"], bool)
    finally:
        proc.terminate()
        proc.wait(10)


def test_demo_prints_forwarded_events():
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "demo", "--seconds", "4"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(" state " in line and "seq=1 " in line for line in lines), proc.stdout
    assert any(" count " in line for line in lines), proc.stdout


def test_the_simulator_has_a_value_for_every_signal_a_config_can_bind():
    from edge_agent.config import Signals
    from edge_agent.simulator.machine import SimulatedMachine
    from edge_agent.simulator.opcua import SIGNAL_TYPES

    machine = SimulatedMachine(cycle_time=1.0, stop_probability=0.0)
    for t in (0.0, 1.2, 1.4, 1.7):
        machine.advance(t)
        values = machine.values()
        assert set(Signals.model_fields) <= set(values)
        assert set(values) <= set(SIGNAL_TYPES), "the OPC UA frontend knows each signal's type"
        if t in (1.2, 1.4):  # within half a cycle after the first part
            assert values["cycle_complete"] is True
    assert values["cycle_complete"] is False and values["packml_state"] == 6 and values["execution"] == "ACTIVE"
