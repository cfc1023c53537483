"""Modbus RTU end to end: a pymodbus serial server (the simulator's RTU frontend) and the driver
talk through a socat pseudo-terminal pair. socat is installed by `make test` (scripts/ensure-system-deps.sh) when
missing and running as root; otherwise these tests skip and say why.
The line runs 8N2: this sandbox's pseudo-terminals refuse parity settings (EINVAL), so even/odd
parity is passed through to pyserial but not exercised here."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from conftest import Collector, FrozenClock, modbus_line_config, write_config
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.scan import scan
from edge_agent.config import ModbusRtuDevice, parse_config
from edge_agent.errors import ConnectionLost
from edge_agent.model import Quality
from edge_agent.simulator import Simulation, serve
from edge_agent.simulator.modbus import ModbusFrontend
from modbus_support import PtyPair, make_config, poll


@pytest.fixture
def line(tmp_path):
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair
    pair.stop()


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def rtu_config(port, **fields):
    device = {"name": "line", "protocol": "modbus_rtu", "port": str(port), "baud_rate": 38400, "parity": "N", "stop_bits": 2,
              "timeout": "300ms", "byte_order": "CDAB", **fields}
    return make_config(device, [
        {"name": "running", "address": "coil:0", "type": "bool"},
        {"name": "parts", "address": "hr:0", "type": "uint32"},
        {"name": "speed", "address": "hr:0@2", "type": "uint16", "scale": {"gain": 0.5}},
        {"name": "label", "address": "hr:1@2", "type": "string[4]"},
        {"name": "fault", "address": "hr:7.2@2", "type": "bool"},
    ], signals={"run": "running", "part_counter": "parts"})


async def start_server(cfg, port_b, sim, tags=None) -> ModbusFrontend:
    device: ModbusRtuDevice = cfg.devices[0]
    frontend = ModbusFrontend(device.model_copy(update={"port": str(port_b)}),
                              cfg.tags if tags is None else tags, sim)
    await frontend.start()
    return frontend


async def test_rtu_delivers_counts_from_several_units(line):
    cfg = rtu_config(line.a)
    clock = Clock()
    sim = Simulation(cfg, clock=clock)
    machine = sim.machines["m1"]
    machine.stop_probability, machine.scrap_rate = 0.0, 0.0
    frontend = await start_server(cfg, line.b, sim)
    frontend.values.update(speed=3000, label="AB12", fault=True)
    driver = ModbusDriver(cfg.devices[0], cfg.tags_of("line"))
    try:
        await driver.connect()
        counts = []
        for t in (0.0, 0.5, 3.2, 10.0, 10.9):
            clock.t = t
            samples, requests = await poll(frontend, driver)
            assert all(s.quality == Quality.GOOD for s in samples.values()), samples
            assert requests == len(driver.plan) == 3  # coil and hr of unit 1, one hr block of unit 2
            counts.append(samples["parts"].value)
            assert samples["running"].value is True
            assert samples["speed"].value == 1500.0  # unit 2, scaled
            assert samples["label"].value == "AB12"
            assert samples["fault"].value is True
        assert counts == [0, 0, 3, 10, 10]  # one part per simulated second, as the machine counts them
        assert machine.total == 10
    finally:
        await driver.close()
        await frontend.stop()


async def test_rtu_unit_that_does_not_answer_blanks_only_its_tags(line):
    cfg = rtu_config(line.a)
    sim = Simulation(cfg, clock=Clock())
    served_tags = [t for t in cfg.tags if "@2" not in t.address]  # unit 2 is unplugged
    frontend = await start_server(cfg, line.b, sim, served_tags)
    driver = ModbusDriver(cfg.devices[0], cfg.tags_of("line"))
    try:
        await driver.connect()
        for _ in range(2):
            samples, _ = await poll(frontend, driver)
            assert samples["running"].quality == Quality.GOOD and samples["parts"].value == 0
            for name in ("speed", "label", "fault"):
                assert samples[name].quality == Quality.BAD
                assert "unit 2 did not answer within 0.3s" in samples[name].error
    finally:
        await driver.close()
        await frontend.stop()


async def test_rtu_line_with_nobody_answering_is_a_lost_connection(line):
    cfg = rtu_config(line.a)
    driver = ModbusDriver(cfg.devices[0], cfg.tags_of("line"))
    await driver.connect()  # the port opens: only the answers are missing
    try:
        with pytest.raises(ConnectionLost, match="unit 1 did not answer.*unit 2 did not answer"):
            await driver.read()
    finally:
        await driver.close()


async def test_rtu_missing_serial_port_fails_to_connect(tmp_path):
    cfg = rtu_config(tmp_path / "no-such-tty")
    driver = ModbusDriver(cfg.devices[0], cfg.tags_of("line"))
    with pytest.raises(ConnectionLost, match="no-such-tty"):
        await driver.connect()


async def test_rtu_counts_reach_mqtt_end_to_end(line, tmp_path, broker, agent_factory):
    """Simulated RTU PLC -> socat line -> agent process -> mosquitto: every part counted once."""
    cfg = modbus_line_config(tmp_path, modbus_port=502, mqtt_port=broker.port)
    cfg["devices"] = [{"name": "plc", "protocol": "modbus_rtu", "port": str(line.a), "baud_rate": 38400,
                       "parity": "N", "stop_bits": 2, "poll_interval": "100ms", "timeout": "500ms"}]
    sim_cfg = parse_config(yaml.safe_dump({**cfg, "devices": [{**cfg["devices"][0], "port": str(line.b)}]}))
    clock = FrozenClock()
    sim = Simulation(sim_cfg, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability = 0.05, 0.0
    ready = asyncio.Event()
    sim_task = asyncio.create_task(serve(sim_cfg, sim, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))

    def counted() -> int:
        ids: dict[str, dict] = {}
        for e in collector.events("count"):
            ids.setdefault(e["event_id"], e)
        return sum(e["count"] for e in ids.values())

    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
            clock.run()
            await asyncio.sleep(2.0)
            clock.freeze()
            assert machine.total > 20
            await collector.wait_for(lambda: counted() >= machine.total, 15, f"{machine.total} parts")
            assert counted() == machine.total
        assert agent.stop() == 0
    finally:
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)


async def test_scan_over_rtu(line):
    cfg = rtu_config(line.a)
    frontend = await start_server(cfg, line.b, Simulation(cfg, clock=Clock()))
    frontend.raw.update({(2, "hr", 10): 0x0001, (2, "hr", 11): 0x86A0})
    frontend.invalid.add((2, "hr", 12))
    try:
        rows = await scan(cfg.devices[0], unit=2, table="hr", start=10, end=13)
    finally:
        await frontend.stop()
    assert [r.word for r in rows] == [1, 0x86A0, None, 0]
    assert "illegal data address" in rows[2].error
