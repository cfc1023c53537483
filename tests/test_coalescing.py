"""Read coalescing: requests per poll, counted at a real pymodbus server, equal the planned minimum."""

from __future__ import annotations


import yaml

from conftest import free_port
from drivers.modbus.driver import ModbusDriver
from edge_agent.config import parse_config
from edge_agent.simulator import Simulation
from edge_agent.simulator.modbus import ModbusFrontend

# A scattered map. By hand: hr {0-1, 10, 100-101, 124} fit one 125-register window, 125 starts a
# second, {300, 420} a third; ir one; coils {0, 1999} one 2000-bit window, 2000 and 5000 one each;
# di one. Minimum: 3 + 1 + 3 + 1 = 8 requests.
SCATTERED = [
    ("hr:0", "uint32"), ("hr:10", "int16"), ("hr:100", "float32"), ("hr:124", "uint16"), ("hr:125", "uint16"),
    ("hr:300", "int32"), ("hr:420", "uint16"), ("ir:5", "int16"),
    ("coil:0", "bool"), ("coil:1999", "bool"), ("coil:2000", "bool"), ("coil:5000", "bool"), ("di:3", "bool"),
]
MINIMUM = 8


def scattered_config(port: int):
    return parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"},
        "machines": [{"id": "m", "signals": {"run": "t9", "part_counter": "t5"}}],  # coil:1999, hr:300
        "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port}],
        "tags": [{"name": f"t{i}", "device": "plc", "address": a, "type": t} for i, (a, t) in enumerate(SCATTERED)],
    }))


async def test_requests_per_poll_counted_at_server_equal_planned_minimum():
    cfg = scattered_config(free_port())
    tags = cfg.tags_of("plc")
    server = ModbusFrontend(cfg.devices[0], tags, Simulation(cfg))
    await server.start()
    driver = ModbusDriver(cfg.devices[0], tags)
    try:
        assert len(driver.plan) == MINIMUM
        await driver.connect()
        for _ in range(3):
            before = server.requests
            samples = await driver.read()
            assert server.requests - before == MINIMUM
            assert {s.tag for s in samples} == {t.name for t in tags}
            assert all(s.quality == "good" for s in samples)
    finally:
        await driver.close()
        await server.stop()


async def test_values_read_through_coalesced_requests_match_the_server():
    cfg = scattered_config(free_port())
    tags = cfg.tags_of("plc")
    sim = Simulation(cfg)
    machine = sim.machines["m"]
    machine.cycle_time, machine.total, machine.running = 1e9, 123_456_789, True
    server = ModbusFrontend(cfg.devices[0], tags, sim)
    await server.start()
    driver = ModbusDriver(cfg.devices[0], tags)
    try:
        await driver.connect()
        samples = {s.tag: s.value for s in await driver.read()}
        assert samples["t5"] == 123_456_789  # int32 at hr:300, in the third hr request
        assert samples["t9"] is True  # coil 1999, at the far end of the first coil request
        assert samples["t10"] is False  # coil 2000, its own request
    finally:
        await driver.close()
        await server.stop()
