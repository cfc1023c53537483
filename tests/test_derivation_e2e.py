"""End to end: simulator (Modbus) -> agent process -> mosquitto -> subscriber, derivation in focus.

Stops long and short, scrap and an order change set over the MQTT command topic must
arrive as the right events, each valid against its schema in schemas/.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import jsonschema
import yaml

from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from edge_agent.config import parse_config
from edge_agent.simulator import Simulation, serve

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
MICRO_STOP = 0.8
REASONS = {101: "jam", 205: "material_missing", 310: "tool_change"}


def line_config(tmp_path: Path, broker_port: int) -> dict:
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker_port)
    cfg["machines"] = [{
        "id": "m1",
        "signals": {"run": "running", "part_counter": "parts", "scrap_counter": "scrap", "fault_code": "fault"},
        "state": {"micro_stop": f"{MICRO_STOP}s"}, "reasons": REASONS, "ideal_cycle_time": 0.05,
        "aggregates": {"interval": "5s"},
    }]
    cfg["tags"] += [{"name": "scrap", "device": "plc", "address": "hr:2", "type": "uint32"},
                    {"name": "fault", "device": "plc", "address": "hr:4", "type": "uint16"}]
    return cfg


async def start_simulator(cfg: dict, clock: FrozenClock):
    sim = Simulation(parse_config(yaml.safe_dump(cfg)), clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.05, 0.08, (0.3, 1.6)
    machine.scrap_rate = 0.1
    ready = asyncio.Event()
    task = asyncio.create_task(serve(sim.cfg, sim, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
    return machine, task


def unique(collector: Collector, type_: str | None = None) -> list[dict]:
    seen: dict[str, dict] = {}
    for e in collector.events():
        seen.setdefault(e["event_id"], e)
    return [e for e in seen.values() if type_ is None or e["type"] == type_]


async def command(port: int, name: str, body: dict) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="mes") as c:
        await c.publish(f"test/s1/a1/l1/m1/cmd/{name}", json.dumps(body), qos=1)


async def test_stops_micro_stops_scrap_and_an_order_change_reach_the_mes(tmp_path, broker, agent_factory):
    cfg = line_config(tmp_path, broker.port)
    clock = FrozenClock()
    machine, sim_task = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with Collector(broker.port) as mes:
        agent.start()
        await mes.wait_for(lambda: unique(mes, "state"), 15, "the first state event")
        await command(broker.port, "set_order", {"order": "4711", "article": "A-1", "operation": "0010"})
        await mes.wait_for(lambda: unique(mes, "order"), 10, "the order event")
        clock.run()
        await mes.wait_for(lambda: unique(mes, "micro_stop") and len(unique(mes, "downtime")) >= 2, 30,
                           "a micro-stop and a closed downtime")
        first_down = next(e for e in unique(mes, "downtime") if e["status"] == "closed")
        await command(broker.port, "set_downtime_reason",
                      {"downtime_id": first_down["downtime_id"], "reason": "no_operator"})
        await mes.wait_for(lambda: unique(mes, "downtime_update"), 10, "the classified downtime")
        [update] = unique(mes, "downtime_update")
        assert (update["downtime_id"], update["reason"], update["reason_source"], update["start"]) == \
            (first_down["downtime_id"], "no_operator", "mes", first_down["start"])
        await command(broker.port, "set_order", {"order": "4712", "article": "B-2"})
        await mes.wait_for(lambda: unique(mes, "order_summary"), 15, "the summary of order 4711")
        await asyncio.sleep(1.0)
        clock.freeze()
        await mes.wait_for(lambda: sum(e["count"] for e in unique(mes, "count")) >= machine.total, 15,
                           f"{machine.total} parts")
        await asyncio.sleep(1.5)  # let the last stop be classified and published

        events = unique(mes)
        counts = unique(mes, "count")
        assert sum(e["count"] for e in counts) == machine.total
        assert sum(e["scrap"] for e in counts) == machine.scrap > 0
        assert sum(e["good"] for e in counts) == machine.good

        micro = unique(mes, "micro_stop")
        assert micro and all(e["duration"] < MICRO_STOP for e in micro)
        closed = [e for e in unique(mes, "downtime") if e["status"] == "closed"]
        opened = {e["downtime_id"] for e in unique(mes, "downtime") if e["status"] == "open"}
        assert closed and {e["downtime_id"] for e in closed} <= opened
        assert all(e["duration"] >= MICRO_STOP - 0.3 for e in closed)  # poll jitter at both ends
        assert {e["reason"] for e in closed} <= set(REASONS.values()) | {"no_operator"}

        [summary] = unique(mes, "order_summary")
        assert summary["order"] == {"id": "4711", "article": "A-1", "operation": "0010"}
        of_4711 = [e for e in counts if e["order"] and e["order"]["id"] == "4711"]
        assert summary["total"] == sum(e["count"] for e in of_4711) > 0
        assert summary["scrap"] == sum(e["scrap"] for e in of_4711)
        assert summary["downtime"] > 0 and summary["run_time"] > 0
        assert any(e["type"] == "aggregate" and e["reason"] == "order_change" for e in events)
        assert unique(mes, "count")[-1]["order"]["id"] == "4712"

        for e in events:
            path = SCHEMAS / f"{e['type']}.v1.json"
            if e["type"] == "gap":
                continue  # the buffer's own event, not derivation's
            jsonschema.validate(e, json.loads(path.read_text()), format_checker=jsonschema.FormatChecker())

        retained = [p for t, p, _ in mes.messages if t == "test/s1/a1/l1/m1/state"]
        assert retained[-1]["state"] == unique(mes, "state")[-1]["state"]
    assert agent.stop() == 0
    sim_task.cancel()


async def test_a_downtime_can_be_classified_by_the_event_id_the_mes_received(tmp_path, broker, agent_factory):
    cfg = line_config(tmp_path, broker.port)
    clock = FrozenClock()
    machine, sim_task = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    try:
        async with Collector(broker.port) as mes:
            agent.start()
            await mes.wait_for(lambda: unique(mes, "state"), 15, "the first state event")
            clock.run()
            await mes.wait_for(lambda: unique(mes, "downtime"), 30, "a downtime")
            clock.freeze()
            down = unique(mes, "downtime")[0]
            await command(broker.port, "set_downtime_reason", {"event_id": down["event_id"], "reason": "cleaning"})
            await mes.wait_for(lambda: unique(mes, "downtime_update"), 5, "the classified downtime")
            assert unique(mes, "downtime_update")[0]["downtime_id"] == down["downtime_id"]
    finally:
        agent.stop()
        sim_task.cancel()
