"""End to end over S7: simulated S7 PLC -> agent process -> real mosquitto -> subscriber.

The S7 simulator runs in the test's event loop on a clock the test can freeze, so the
test knows exactly how many parts the machine made, including across a PLC restart.
"""

from __future__ import annotations

import asyncio

import yaml

from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from edge_agent.config import parse_config
from edge_agent.simulator import Simulation
from edge_agent.simulator.s7 import S7Frontend


def unique_events(collector: Collector) -> list[dict]:
    """First arrival of each event_id; a duplicate (at-least-once delivery) must be identical."""
    first: dict[str, dict] = {}
    for e in collector.events():
        assert first.setdefault(e["event_id"], e) == e, f"event_id {e['event_id']} arrived with different content"
    return list(first.values())


def counted(collector: Collector) -> int:
    return sum(e["count"] for e in unique_events(collector) if e["type"] == "count")


def assert_complete(collector: Collector, produced: int) -> None:
    assert counted(collector) == produced
    seqs = [e["seq"] for e in unique_events(collector)]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "seq must be gap-free from 1"


async def produce(clock: FrozenClock, seconds: float) -> None:
    """Let the simulated machine run for `seconds`, then freeze it."""
    clock.run()
    await asyncio.sleep(seconds)
    clock.freeze()


def s7_line_config(tmp_path, *, s7_port: int, mqtt_port: int) -> dict:
    cfg = modbus_line_config(tmp_path, modbus_port=1, mqtt_port=mqtt_port)
    cfg["devices"] = [{"name": "plc", "protocol": "s7", "host": "127.0.0.1", "port": s7_port, "rack": 0, "slot": 1,
                       "poll_interval": "100ms", "timeout": "1s"}]
    cfg["tags"] = [
        {"name": "running", "device": "plc", "address": "DB10.DBX0.0", "type": "BOOL"},
        {"name": "parts", "device": "plc", "address": "DB10.DBD2", "type": "UDINT"},
        {"name": "current", "device": "plc", "address": "DB10.DBD6", "type": "REAL"},
        {"name": "sensor", "device": "plc", "address": "EW2", "type": "INT"},
    ]
    return cfg


async def test_parts_counted_over_s7_arrive_exactly_once_across_a_plc_restart(tmp_path, broker, agent_factory):
    cfg = s7_line_config(tmp_path, s7_port=free_port(), mqtt_port=broker.port)
    parsed = parse_config(yaml.safe_dump(cfg))
    clock = FrozenClock()
    sim = Simulation(parsed, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.05, 0.05, (0.2, 0.5)
    plc = S7Frontend(parsed.devices[0], parsed.tags, sim)
    await plc.start()
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
            await produce(clock, 2.0)
            await collector.wait_for(lambda: counted(collector) >= machine.total, 15, f"{machine.total} parts")
            before_restart = machine.total
            assert before_restart > 10

            await plc.stop()  # the PLC is switched off, then on again (the machine makes nothing meanwhile)
            await collector.wait_for(lambda: any(e.get("state") == "not_available" for e in collector.events("state")),
                                     15, "the machine reported not available")
            await plc.start()
            await produce(clock, 1.5)
            assert machine.total > before_restart
            await collector.wait_for(lambda: counted(collector) >= machine.total, 20, f"{machine.total} parts")
            assert_complete(collector, machine.total)
        assert agent.stop() == 0
    finally:
        await plc.stop()
    log = agent.output()
    assert "Traceback" not in log
    assert log.count("event=s7_connected") == 2 and "event=device_disconnected" in log  # it reconnected
