"""End to end over OPC UA: simulated machine (asyncua server) -> agent process -> mosquitto.

Both modes: polling (Read every poll_interval) and subscription (monitored items). The
simulator runs in the test's loop on a clock the test freezes, so the test knows exactly
how many parts were made; every one of them must arrive once as a count event.
"""

from __future__ import annotations

import asyncio

import pytest
import yaml
from asyncua import ua
from conftest import Collector, FrozenClock, free_port, write_config
from opcua_fixtures import UaTestServer, Users, Var, make_cert

from edge_agent.config import parse_config
from edge_agent.simulator import Simulation, serve

NS = "urn:acme:press"


def opcua_line_config(tmp_path, *, opcua_port: int, mqtt_port: int, mode: str) -> dict:
    return {
        "plant": {"site": "s1", "area": "a1", "line": "l1"},
        "machines": [{"id": "m1", "signals": {"run": "running", "part_counter": "parts"}}],
        "devices": [{"name": "press", "protocol": "opcua", "url": f"opc.tcp://127.0.0.1:{opcua_port}/sim",
                     "mode": mode, "poll_interval": "100ms", "timeout": "1s", "keepalive": "2s"}],
        "tags": [
            {"name": "running", "device": "press", "address": f"nsu={NS};s=Line3.Press.Running", "type": "Boolean"},
            {"name": "parts", "device": "press", "address": f"nsu={NS};s=Line3.Press.Counter", "type": "UInt32"},
        ],
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "outputs": {"mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "test", "timeout": "3s"}},
    }


def unique_events(collector: Collector) -> list[dict]:
    first: dict[str, dict] = {}
    for e in collector.events():
        assert first.setdefault(e["event_id"], e) == e, "a duplicate must be identical"
    return list(first.values())


def counted(collector: Collector) -> int:
    return sum(e["count"] for e in unique_events(collector) if e["type"] == "count")


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_opcua_counts_arrive_exactly_once(tmp_path, broker, agent_factory, mode):
    cfg = opcua_line_config(tmp_path, opcua_port=free_port(), mqtt_port=broker.port, mode=mode)
    clock = FrozenClock()
    sim = Simulation(parse_config(yaml.safe_dump(cfg)), clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.05, 0.05, (0.2, 0.5)
    ready = asyncio.Event()
    sim_task = asyncio.create_task(serve(sim.cfg, sim, ready=ready))
    try:
        async with asyncio.timeout(15):
            await ready.wait()
        agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("state"), 20, "the first state event")
            clock.run()
            await asyncio.sleep(3.0)
            clock.freeze()
            assert machine.total > 20
            await collector.wait_for(lambda: counted(collector) >= machine.total, 15, f"{machine.total} parts")
            await asyncio.sleep(0.5)  # nothing more may arrive: the count is exact, not at least
            assert counted(collector) == machine.total
            seqs = [e["seq"] for e in unique_events(collector)]
            assert sorted(seqs) == list(range(1, len(seqs) + 1))
            assert "test/s1/a1/l1/m1/event/count" in {t for t, _, _ in collector.messages}
        assert agent.stop() == 0
        out = agent.output()
        assert "event=opcua_connected" in out
        assert ("event=opcua_subscribed" in out) == (mode == "subscribe"), "the configured mode is the one used"
        assert "Traceback" not in out
    finally:
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)


async def test_agent_refused_by_the_server_says_so_once_without_traceback(tmp_path, broker, agent_factory,
                                                                          monkeypatch):
    srv = UaTestServer(namespaces=[NS], variables=[Var("Counter", "UInt32", 1)],
                       policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                       certificate=make_cert(tmp_path / "server-pki", "server", "urn:freeopcua:python:server",
                                             server=True),
                       users=Users({"operator": "right"}))
    await srv.start()
    try:
        cfg = opcua_line_config(tmp_path, opcua_port=srv.port, mqtt_port=broker.port, mode="poll")
        cfg["devices"][0].update({"url": srv.url, "security_policy": "Basic256Sha256", "username": "operator",
                                  "password": "${OPCUA_TEST_PASSWORD}", "pki_dir": str(tmp_path / "pki")})
        cfg["tags"] = [{"name": "parts", "device": "press", "address": f"nsu={NS};s=Counter", "type": "UInt32"}]
        cfg["machines"][0]["signals"] = {"part_counter": "parts"}
        agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
        monkeypatch.setenv("OPCUA_TEST_PASSWORD", "Xy7-not-it")  # the agent process inherits it
        agent.start()
        deadline = asyncio.get_running_loop().time() + 20
        while "device_unreachable" not in agent.output():
            assert asyncio.get_running_loop().time() < deadline, agent.output()
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        assert agent.stop() == 0
        out = agent.output()
        assert out.count("device_unreachable") == 1 and "rejected=True" in out
        assert "refused user 'operator' (BadUserAccessDenied)" in out
        assert "Traceback" not in out and "Xy7-not-it" not in out
        assert srv.users.attempts == 1, "no retry storm"
        assert f"certificate={tmp_path / 'pki' / 'own' / 'edge-agent.der'}" in out, "the agent says where its certificate is"
    finally:
        await srv.stop()


async def test_server_restart_with_reordered_namespaces_loses_no_count(tmp_path, broker, agent_factory):
    """The PLC's OPC UA server restarts (same port, namespaces reordered) while the machine keeps
    producing: the agent reconnects, re-resolves the namespace URI and every part is counted once."""
    from edge_agent.simulator.opcua import OpcUaFrontend

    cfg = opcua_line_config(tmp_path, opcua_port=free_port(), mqtt_port=broker.port, mode="subscribe")
    clock = FrozenClock()
    parsed = parse_config(yaml.safe_dump(cfg))
    sim = Simulation(parsed, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.05, 0.05, (0.2, 0.5)
    dev = parsed.devices[0]
    frontend = OpcUaFrontend(dev, parsed.tags, sim)
    await frontend.start()
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("state"), 20, "the first state event")
            clock.run()
            await asyncio.sleep(1.5)
            await frontend.stop()  # the machine keeps producing while its server is down
            await asyncio.sleep(0.5)
            frontend = OpcUaFrontend(dev, parsed.tags, sim, extra_namespaces=["urn:acme:safety", "urn:acme:energy"])
            await frontend.start()
            await asyncio.sleep(1.5)
            clock.freeze()
            await collector.wait_for(lambda: counted(collector) >= machine.total, 20, f"{machine.total} parts")
            await asyncio.sleep(0.5)
            assert counted(collector) == machine.total
        assert agent.stop() == 0
        out = agent.output()
        assert out.count("event=opcua_subscribed") == 2 and "Traceback" not in out
    finally:
        await frontend.stop()
