"""The simulator serves simulated machines over S7 (python-snap7 server); values move with the machine."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from conftest import free_port
from drivers.s7.driver import S7Driver
from edge_agent.config import parse_config
from edge_agent.model import Quality
from edge_agent.simulator import Simulation, serve
from edge_agent.simulator.s7 import S7Frontend


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def config(port: int):
    return parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"},
        "machines": [{"id": "welder", "signals": {"run": "running", "part_counter": "parts"}}],
        "devices": [{"name": "plc", "protocol": "s7", "host": "127.0.0.1", "port": port, "timeout": "1s",
                     "cpu_state_interval": 0}],
        "tags": [
            {"name": "running", "device": "plc", "address": "DB1.DBX0.0", "type": "BOOL"},
            {"name": "parts", "device": "plc", "address": "DB1.DBD2", "type": "UDINT"},
            {"name": "current", "device": "plc", "address": "DB1.DBD6", "type": "REAL"},
            {"name": "recipe", "device": "plc", "address": "DB2.DBB0", "type": "STRING[8]"},
            {"name": "robot", "device": "plc", "address": "MW10", "type": "INT"},
            {"name": "clamp", "device": "plc", "address": "A0.1", "type": "BOOL"},
            {"name": "sensor", "device": "plc", "address": "EW4", "type": "INT"},
        ],
    }))


async def test_frontend_serves_machine_values_that_change_over_time():
    cfg = config(free_port())
    clock = Clock()
    sim = Simulation(cfg, clock=clock)
    frontend = S7Frontend(cfg.devices[0], cfg.tags, sim)
    await frontend.start()
    driver = S7Driver(cfg.devices[0], cfg.tags)
    await driver.connect()
    try:
        first = {s.tag: s.value for s in await driver.read()}
        assert first == {"running": True, "parts": 0, "current": 0.0, "recipe": "0", "robot": 0, "clamp": False,
                         "sensor": 0}
        clock.t += 30  # 30 s of production; unbound tags ramp 1 per second
        later = {s.tag: s for s in await driver.read()}
        assert all(s.quality == Quality.GOOD for s in later.values())
        machine = sim.machines["welder"]
        assert later["parts"].value == machine.total > 0  # what the machine made is what the PLC shows
        assert later["running"].value is machine.running
        assert (later["current"].value, later["recipe"].value, later["robot"].value) == (30.0, "30", 30)
        frontend.values["current"] = 12.5  # a test can pin a value
        assert {s.tag: s.value for s in await driver.read()}["current"] == 12.5
        assert frontend.requests == driver.health.requests == 3 * len(driver.plan)
        assert len(driver.plan) == 1  # DB1, DB2, M, Q, I in one multi-variable read
    finally:
        await driver.close()
        await frontend.stop()


async def test_simulate_serves_s7_devices_of_a_config():
    cfg = config(free_port())
    ready = asyncio.Event()
    task = asyncio.create_task(serve(cfg, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    driver = S7Driver(cfg.devices[0], cfg.tags)
    try:
        await driver.connect()
        samples = await driver.read()
        assert [s.quality for s in samples] == [Quality.GOOD] * len(cfg.tags)
        assert {s.tag: s.value for s in samples}["running"] is True
    finally:
        await driver.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_second_simulator_on_the_same_port_is_refused_not_shared():
    # snap7's server sets SO_REUSEPORT: without a check two servers would split the clients between them
    cfg = config(free_port())
    sim = Simulation(cfg)
    first = S7Frontend(cfg.devices[0], cfg.tags, sim)
    await first.start()
    try:
        with pytest.raises(OSError, match="cannot serve S7 on 127.0.0.1:.*another simulator"):
            await S7Frontend(cfg.devices[0], cfg.tags, sim).start()
        await first.stop()
        await first.start()  # a restart on the same port is fine
    finally:
        await first.stop()
