"""End to end: simulated Modbus PLC -> agent process -> real mosquitto -> subscriber.

The simulator runs in the test's event loop on a clock the test can freeze, so the
test knows exactly how many parts the machine made; the agent is a real process
(so it can be SIGKILLed) with a real buffer file.
"""

from __future__ import annotations

import asyncio

import yaml

from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from edge_agent.config import parse_config
from edge_agent.simulator import Simulation, serve


async def start_simulator(cfg: dict, clock: FrozenClock):
    parsed = parse_config(yaml.safe_dump(cfg))
    sim = Simulation(parsed, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.05, 0.05, (0.2, 0.5)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(parsed, sim, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
    return machine, task


def unique_events(collector: Collector) -> list[dict]:
    """First arrival of each event_id, in arrival order; a duplicate must be identical."""
    first: dict[str, dict] = {}
    for e in collector.events():
        seen = first.setdefault(e["event_id"], e)
        # a re-send after a long outage may add "historical": true; nothing else may differ
        assert {**seen, "historical": None} == {**e, "historical": None}, \
            f"event_id {e['event_id']} arrived with different content"
    return list(first.values())


def counted(collector: Collector) -> int:
    return sum(e["count"] for e in unique_events(collector) if e["type"] == "count")


def assert_complete(collector: Collector, produced: int) -> None:
    events = unique_events(collector)
    assert counted(collector) == produced
    seqs = [e["seq"] for e in events]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "seq must be gap-free from 1 and never reused"
    assert seqs == sorted(seqs), "events must arrive in seq order (after dropping duplicates)"
    for e in events:
        assert {"schema", "event_id", "seq", "site", "area", "line", "machine", "ts"} <= e.keys()
        assert (e["site"], e["area"], e["line"], e["machine"]) == ("s1", "a1", "l1", "m1")
        assert e["ts"].endswith("Z") and len(e["ts"]) == len("2026-01-01T00:00:00.000Z")


async def produce(clock: FrozenClock, machine, seconds: float) -> None:
    clock.run()
    await asyncio.sleep(seconds)
    clock.freeze()


async def test_every_part_arrives_exactly_once(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock()
    machine, sim_task = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with Collector(broker.port) as collector:
        agent.start()
        # the first poll reports the machine state: from then on every part is the agent's to count
        await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
        await produce(clock, machine, 3.0)
        assert machine.total > 20
        await collector.wait_for(lambda: counted(collector) >= machine.total, 15, f"{machine.total} parts")
        assert_complete(collector, machine.total)
        topics = {t for t, _, _ in collector.messages}
        assert "test/s1/a1/l1/m1/event/count" in topics
        retained_state = [p for t, p, r in collector.messages if t == "test/s1/a1/l1/m1/state"]
        assert retained_state and retained_state[-1]["state"] in ("executing", "not_executing")
    assert agent.stop() == 0
    sim_task.cancel()


async def test_broker_outage_loses_nothing_and_keeps_order(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock()
    machine, sim_task = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with Collector(broker.port) as collector:
        agent.start()
        await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
        clock.run()
        await asyncio.sleep(1.0)
        broker.stop()
        at_outage = machine.total
        await asyncio.sleep(4.0)  # the machine keeps producing; the agent buffers
        during = machine.total - at_outage
        broker.start()
        await asyncio.sleep(1.0)
        clock.freeze()
        assert during > 20, "the machine must have produced during the outage"
        await collector.wait_for(lambda: counted(collector) >= machine.total, 30, f"{machine.total} parts")
        assert_complete(collector, machine.total)
    assert "mqtt_disconnected" in agent.output()
    agent.stop()
    sim_task.cancel()


async def test_sigkill_and_restart_loses_nothing_and_seq_continues(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock()
    machine, sim_task = await start_simulator(cfg, clock)
    config = write_config(tmp_path / "agent.yaml", cfg)
    async with Collector(broker.port) as collector:
        first = agent_factory(config)
        first.start()
        await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
        clock.run()
        await asyncio.sleep(1.5)
        first.kill()  # SIGKILL mid-production
        seq_before = max(e["seq"] for e in unique_events(collector))
        at_kill = machine.total
        await asyncio.sleep(1.0)  # parts made while no agent runs must be counted after restart
        second = agent_factory(config)
        second.start()
        await collector.wait_for(lambda: machine.total >= at_kill + 10, 20, "production after the kill")
        await asyncio.sleep(1.0)
        clock.freeze()
        await collector.wait_for(lambda: counted(collector) >= machine.total, 20, f"{machine.total} parts")
        assert_complete(collector, machine.total)
        assert max(e["seq"] for e in unique_events(collector)) > seq_before
    second.stop()
    sim_task.cancel()
