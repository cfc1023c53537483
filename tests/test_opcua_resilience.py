"""OPC UA resilience against real asyncua servers: a restart with a reordered namespace
table, 20 forced reconnects, a session the server forgot, a peer that never answers.
Throughout, the server must never hold more than one session of the agent."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from opcua_fixtures import NS_OTHER, NS_PRESS, UaTestServer, Var, device, wait_until

from drivers.opcua.driver import OpcUaDriver
from edge_agent.config import Tag
from edge_agent.errors import ConnectionLost
from edge_agent.model import DeviceStatus, Quality, Sample
from edge_agent.sampling import Backoff, run_device

TAGS = [Tag(name="parts", device="ua", address=f"nsu={NS_PRESS};s=Counter", type="UInt32")]


class Agent:
    """The sampler (`run_device`) driving one OPC UA driver, as the daemon runs it."""

    def __init__(self, srv: UaTestServer, mode: str):
        self.srv = srv
        self.driver = OpcUaDriver(device(srv.url, mode=mode, keepalive=1.0, timeout=1.0, poll_interval=0.05), TAGS)
        self.items: list[Sample | DeviceStatus] = []
        self.max_sessions = 0
        self._tasks: list[asyncio.Task] = []
        self.mode = mode

    async def emit(self, items):
        self.items.extend(items)

    def values(self) -> list[int]:
        return [s.value for s in self.items if isinstance(s, Sample) and s.quality is Quality.GOOD]

    def connects(self) -> int:
        return sum(1 for s in self.items if isinstance(s, DeviceStatus) and s.connected)

    async def _watch_sessions(self):
        while True:
            self.max_sessions = max(self.max_sessions, self.srv.sessions())
            await asyncio.sleep(0.005)

    async def __aenter__(self):
        run = run_device(self.driver, self.emit, backoff=Backoff(base=0.1, cap=0.4), subscribe=self.mode == "subscribe")
        self._tasks = [asyncio.create_task(run), asyncio.create_task(self._watch_sessions())]
        return self

    async def __aexit__(self, *exc):
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.driver.close()

    async def expect(self, value: int, timeout: float) -> float:
        t0 = time.monotonic()
        await wait_until(lambda: self.values() and self.values()[-1] == value, timeout, f"parts == {value}")
        return time.monotonic() - t0


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_restart_with_reordered_namespaces_recovers_with_one_session(mode):
    srv = UaTestServer(namespaces=[NS_PRESS, NS_OTHER], variables=[Var("Counter", "UInt32", 1)], decoys=True)
    await srv.start()
    try:
        async with Agent(srv, mode) as agent:
            await agent.expect(1, 5)
            await srv.set("Counter", 5)
            await agent.expect(5, 3)
            # restart on the same port: the press namespace moves from index 2 to 4, and the old
            # index now holds a decoy node with the same identifier (value 999999)
            await srv.restart(namespaces=[NS_OTHER, "urn:acme:new", NS_PRESS])
            await srv.set("Counter", 7)
            recovery = await agent.expect(7, 10)
            assert recovery < 10
            assert 999999 not in agent.values(), "stale namespace index read the decoy node"
            await srv.set("Counter", 8)
            await agent.expect(8, 3)
            assert agent.connects() == 2
            assert srv.sessions() == 1
        assert agent.max_sessions == 1
        await wait_until(lambda: srv.sessions() == 0, 2, "the session to be closed on shutdown")
    finally:
        await srv.stop()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_twenty_forced_reconnects_never_leave_a_second_session(mode):
    srv = UaTestServer(variables=[Var("Counter", "UInt32", 0)])
    await srv.start()
    try:
        async with Agent(srv, mode) as agent:
            await agent.expect(0, 5)
            for i in range(1, 21):
                connects = agent.connects()
                assert srv.drop_connections() == 1
                await wait_until(lambda before=connects: agent.connects() > before, 5, f"reconnect {i}")
                await srv.set("Counter", i)
                await agent.expect(i, 3)
                assert srv.sessions() == 1
            assert agent.max_sessions == 1
            if mode == "subscribe":
                # the server keeps a session with subscriptions after a lost connection (for transfer);
                # the driver reclaimed and closed each one before opening the next
                assert agent.driver.sessions_reclaimed == 20
    finally:
        await srv.stop()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_session_the_server_forgot_is_detected(mode):
    """BadSessionIdInvalid on the next Read (poll) or on the keep-alive probe (subscribe) -> reconnect."""
    srv = UaTestServer(variables=[Var("Counter", "UInt32", 3)])
    await srv.start()
    try:
        async with Agent(srv, mode) as agent:
            await agent.expect(3, 5)
            for session in list(srv.server.iserver._external_sessions.values()):
                await session.close_session(True)  # the TCP connection stays up; the session is gone
            await wait_until(lambda: agent.connects() == 2, 6, "a reconnect after the session vanished")
            await srv.set("Counter", 4)
            await agent.expect(4, 3)
            assert agent.max_sessions == 1
    finally:
        await srv.stop()


async def test_connect_to_a_peer_that_never_answers_times_out():
    async def silent(reader, writer):
        await reader.read(1 << 16)  # accept, read the Hello, never answer
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        drv = OpcUaDriver(device(f"opc.tcp://127.0.0.1:{port}", timeout=0.3), TAGS)
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match="timed out"):
            await drv.connect()
        assert time.monotonic() - t0 < 0.3 * 6 + 0.5
    finally:
        server.close()
    # nothing listens at all: refused at once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await OpcUaDriver(device(f"opc.tcp://127.0.0.1:{closed_port}"), TAGS).connect()


async def test_a_silent_connection_is_detected_by_keepalive_and_recovered():
    """A pulled cable: the socket stays open but nothing arrives. The keep-alive notices, the sampler
    reconnects (timing out while the line is dead), and the stranded session is reclaimed afterwards."""
    from opcua_fixtures import Blackhole

    srv = UaTestServer(variables=[Var("Counter", "UInt32", 1)])
    await srv.start()
    proxy = Blackhole(srv.port)
    await proxy.start()
    try:
        agent = Agent(srv, "subscribe")
        agent.driver = OpcUaDriver(device(f"opc.tcp://127.0.0.1:{proxy.port}/test", mode="subscribe", keepalive=1.0,
                                          timeout=0.5, poll_interval=0.05), TAGS)
        async with agent:
            await agent.expect(1, 5)
            proxy.blocked = True
            t0 = time.monotonic()
            await wait_until(lambda: any(isinstance(s, DeviceStatus) and not s.connected for s in agent.items), 6,
                             "the dead connection to be noticed")
            assert time.monotonic() - t0 < 2 * 1.0 + 0.5 + 1.0, "detected within the keep-alive bound"
            await asyncio.sleep(1.0)  # reconnect attempts time out meanwhile
            proxy.blocked = False
            await srv.set("Counter", 2)
            await agent.expect(2, 10)
            assert agent.connects() == 2
            await wait_until(lambda: srv.sessions() == 1, 3, "the stranded session to be reclaimed")
            assert agent.driver.sessions_reclaimed == 1
            assert agent.max_sessions == 1
    finally:
        await proxy.stop()
        await srv.stop()
