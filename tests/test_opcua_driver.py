"""OPC UA driver against real asyncua servers on loopback: data types, status codes,
namespace URIs, chunked reads, and the simulator's machine read by polling and by subscription."""

from __future__ import annotations

import asyncio
import math

import pytest
import pytest_asyncio
import yaml
from conftest import FrozenClock
from opcua_fixtures import (
    NS_OTHER,
    NS_PRESS,
    UaTestServer,
    Var,
    device,
    free_port,
    utc,
    wait_until,
)

from drivers.base import Subscriber
from drivers.opcua.driver import OpcUaDriver
from edge_agent.config import Tag, parse_config
from edge_agent.model import Quality
from edge_agent.simulator import Simulation
from edge_agent.simulator.opcua import OpcUaFrontend

pytestmark = pytest.mark.asyncio(loop_scope="module")

VARS = [
    Var("Bool", "Boolean", True), Var("I16", "Int16", -5), Var("U16", "UInt16", 65535),
    Var("I32", "Int32", -70000), Var("U32", "UInt32", 4_000_000_000), Var("I64", "Int64", -(2**40)),
    Var("U64", "UInt64", 2**63 + 5), Var("F", "Float", 1.5), Var("D", "Double", 2.25),
    Var("Str", "String", "hello"), Var("When", "DateTime", utc(2026, 1, 2, 3, 4, 5)),
    Var("Unsure", "UInt32", 7, status="UncertainLastUsableValue"),
    Var("Broken", "Double", 0.0, status="BadSensorFailure"),
]
EXPECTED = {
    "Bool": True, "I16": -5, "U16": 65535, "I32": -70000, "U32": 4_000_000_000, "I64": -(2**40),
    "U64": 2**63 + 5, "F": 1.5, "D": 2.25, "Str": "hello", "When": "2026-01-02T03:04:05.000Z",
}


def tags_for(names_types: list[tuple[str, str, str]]) -> list[Tag]:
    return [Tag(name=n, device="ua", address=a, type=t) for n, a, t in names_types]


TAGS = tags_for(
    [(v.ident, f"nsu={NS_PRESS};s={v.ident}", v.data_type) for v in VARS]
    + [("by_index", "ns=3;s=U32", "UInt32"),  # NS_OTHER comes first, so the press namespace is index 3
       ("mismatch", f"nsu={NS_PRESS};s=Str", "Int32"),
       ("missing_node", f"nsu={NS_PRESS};s=Nope", "Double"),
       ("missing_ns", "nsu=urn:nope;s=U32", "UInt32")]
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def types_server():
    srv = UaTestServer(namespaces=[NS_OTHER, NS_PRESS], variables=list(VARS), max_nodes_per_read=3)
    await srv.start()
    yield srv
    await srv.stop()


def check_types(samples) -> None:
    by = {s.tag: s for s in samples}
    assert set(by) == {t.name for t in TAGS}
    for name, value in EXPECTED.items():
        assert by[name].quality is Quality.GOOD and by[name].error is None, by[name]
        assert by[name].value == value and type(by[name].value) is type(value), by[name]
    assert by["by_index"].value == 4_000_000_000
    assert (by["Unsure"].value, by["Unsure"].quality, by["Unsure"].error) == (7, Quality.UNCERTAIN, "UncertainLastUsableValue")
    assert (by["Broken"].value, by["Broken"].quality, by["Broken"].error) == (None, Quality.BAD, "BadSensorFailure")
    assert by["mismatch"].quality is Quality.BAD and "type mismatch" in by["mismatch"].error
    assert (by["missing_node"].quality, by["missing_node"].error) == (Quality.BAD, "BadNodeIdUnknown")
    assert by["missing_ns"].quality is Quality.BAD and "urn:nope" in by["missing_ns"].error


async def test_poll_reads_every_type_and_carries_status_codes(types_server):
    drv = OpcUaDriver(device(types_server.url), TAGS)
    await drv.connect()
    try:
        assert drv.namespaces.index(NS_PRESS) == 3
        check_types(await drv.read())
    finally:
        await drv.close()


async def test_poll_chunks_reads_to_the_servers_max_nodes_per_read(types_server):
    drv = OpcUaDriver(device(types_server.url), TAGS)
    await drv.connect()
    try:
        assert drv.max_nodes_per_read == 3
        before = types_server.reads
        samples = await drv.read()
        # 16 resolvable tags + the namespace table check = 17 nodes, at most 3 per Read
        assert types_server.reads - before == math.ceil(17 / 3)
        check_types(samples)
    finally:
        await drv.close()
    assert types_server.sessions() == 0


async def test_subscription_delivers_initial_values_and_changes(types_server):
    drv = OpcUaDriver(device(types_server.url, mode="subscribe", poll_interval=0.05), TAGS)
    assert isinstance(drv, Subscriber)
    got = []

    async def deliver(samples):
        got.extend(samples)

    await drv.connect()
    task = asyncio.create_task(drv.subscribe(deliver))
    try:
        await wait_until(lambda: {s.tag for s in got} >= {t.name for t in TAGS}, 5, "initial values of every tag")
        check_types({s.tag: s for s in got}.values())
        await types_server.set("U32", 123)
        await wait_until(lambda: any(s.tag == "U32" and s.value == 123 for s in got), 5, "the change of U32")
        assert any(s.tag == "by_index" and s.value == 123 for s in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
        await types_server.set("U32", 4_000_000_000)
    await wait_until(lambda: types_server.sessions() == 0, 2, "the session to be closed")


# ---------------------------------------------------------------- the simulator's machine


SIM_CFG = {
    "plant": {"site": "s1", "area": "a1", "line": "l1"},
    "machines": [{"id": "m1", "signals": {"run": "running", "part_counter": "parts"}}],
    "devices": [{"name": "ua", "protocol": "opcua", "url": "", "poll_interval": "50ms", "timeout": "1s"}],
    "tags": [
        {"name": "running", "device": "ua", "address": f"nsu={NS_PRESS};s=Line3.Press.Running", "type": "Boolean"},
        {"name": "parts", "device": "ua", "address": f"nsu={NS_PRESS};s=Line3.Press.Counter", "type": "UInt32"},
    ],
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def simulator():
    raw = yaml.safe_load(yaml.safe_dump(SIM_CFG))
    raw["devices"][0]["url"] = f"opc.tcp://127.0.0.1:{free_port()}/sim"
    cfg = parse_config(yaml.safe_dump(raw))
    clock = FrozenClock()
    sim = Simulation(cfg, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = 0.02, 0.1, (0.05, 0.1)
    frontend = OpcUaFrontend(cfg.devices[0], cfg.tags, sim)
    await frontend.start()
    yield cfg, clock, machine, frontend
    await frontend.stop()


async def test_polled_counts_match_the_simulated_machine(simulator):
    cfg, clock, machine, _frontend = simulator
    drv = OpcUaDriver(cfg.devices[0], cfg.tags)
    await drv.connect()
    try:
        for _ in range(3):
            clock.run()
            await asyncio.sleep(0.3)
            clock.freeze()
            await asyncio.sleep(0.1)  # one simulator refresh (50 ms) after the freeze
            by = {s.tag: s for s in await drv.read()}
            assert machine.total > 0
            assert by["parts"].value == machine.total and by["running"].value == machine.running
    finally:
        await drv.close()


async def test_subscribed_counts_match_the_simulated_machine(simulator):
    cfg, clock, machine, _frontend = simulator
    dev = cfg.devices[0].model_copy(update={"mode": "subscribe"})
    drv = OpcUaDriver(dev, cfg.tags)
    latest: dict[str, object] = {}
    parts_seen: list[int] = []

    async def deliver(samples):
        for s in samples:
            latest[s.tag] = s.value
            if s.tag == "parts":
                parts_seen.append(s.value)

    await drv.connect()
    task = asyncio.create_task(drv.subscribe(deliver))
    try:
        await wait_until(lambda: "parts" in latest, 5, "the initial value")
        start = machine.total
        clock.run()
        await asyncio.sleep(1.0)
        clock.freeze()
        assert machine.total - start > 10
        await wait_until(lambda: latest.get("parts") == machine.total, 3, f"parts == {machine.total}")
        assert latest["running"] == machine.running
        assert parts_seen == sorted(parts_seen), "a counter never goes backwards"
        assert len(set(parts_seen)) > 5, "changes arrive as they happen, not only at the end"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await drv.close()
