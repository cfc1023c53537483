"""Sampling: drift-free schedule, backoff, isolation of a dead device, reconnect after a PLC restart."""

from __future__ import annotations

import asyncio

import yaml
from hypothesis import given
from hypothesis import strategies as st

from conftest import free_port
from drivers.modbus.driver import ModbusDriver
from edge_agent.config import parse_config
from edge_agent.model import DeviceStatus, Quality, Sample
from edge_agent.sampling import TIMER_GRANULARITY, Backoff, next_deadline, pause, run_device
from edge_agent.simulator import Simulation
from edge_agent.simulator.modbus import ModbusFrontend


@given(start=st.floats(0, 1e6), interval=st.floats(0.01, 60), lateness=st.floats(0, 600))
def test_next_deadline_stays_on_the_grid_and_ahead(start, interval, lateness):
    current = start + interval + lateness
    deadline, missed = next_deadline(start, interval, current)
    assert deadline > current
    steps = (deadline - start) / interval
    assert abs(steps - round(steps)) < 1e-6 * max(1.0, steps), "ticks stay on start + k*interval"
    assert deadline - current <= interval * (1 + 1e-9)
    assert missed == round(steps) - 1


@given(st.floats(0, 1e6), st.floats(-10, 10))
def test_pause_sleeps_until_the_deadline_unless_closer_than_the_timer_granularity(current, ahead):
    delay = pause(current + ahead, current)
    if ahead >= TIMER_GRANULARITY + 1e-6:
        assert abs(delay - ahead) < 1e-6  # the whole way to the deadline
    elif ahead < TIMER_GRANULARITY - 1e-6:
        assert delay == 0.0  # a sleep this short would last a millisecond: yield instead


def test_backoff_grows_to_the_cap_with_jitter():
    b = Backoff(base=0.5, cap=8.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = Backoff(base=0.5, cap=8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def two_devices(live_port: int, dead_port: int):
    return parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"},
        "machines": [{"id": "m", "signals": {"part_counter": "live"}}],
        "devices": [
            {"name": "live", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": live_port,
             "poll_interval": "100ms", "timeout": "500ms"},
            {"name": "dead", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": dead_port,
             "poll_interval": "100ms", "timeout": "500ms"},
        ],
        "tags": [{"name": "live", "device": "live", "address": "hr:0", "type": "uint32"},
                 {"name": "dead", "device": "dead", "address": "hr:0", "type": "uint32"}],
    }))


async def test_a_device_that_never_answers_does_not_delay_another():
    async def swallow(reader, writer):  # accepts the connection, never answers a request
        await reader.read(-1)

    blackhole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    cfg = two_devices(free_port(), blackhole.sockets[0].getsockname()[1])
    server = ModbusFrontend(cfg.devices[0], cfg.tags_of("live"), Simulation(cfg))
    await server.start()
    got: dict[str, list] = {"live": [], "dead": []}

    def emitter(name):
        async def emit(items):
            got[name].extend(items)
        return emit

    drivers = [ModbusDriver(d, cfg.tags_of(d.name)) for d in cfg.devices]
    tasks = [asyncio.create_task(run_device(d, emitter(d.device.name))) for d in drivers]
    await asyncio.sleep(2.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop()
    blackhole.close()

    live = [s for s in got["live"] if isinstance(s, Sample)]
    assert len(live) >= 12, f"the live device polled only {len(live)} times in 2 s at 100 ms"
    assert all(s.quality == Quality.GOOD for s in live)
    assert all(b.ts > a.ts for a, b in zip(live, live[1:])), "each sample has its own read time"
    down = [s for s in got["dead"] if isinstance(s, DeviceStatus) and not s.connected]
    assert down and down[0].error, "the dead device is reported gone, with the reason"
    assert not [s for s in got["dead"] if isinstance(s, Sample)], "a device that never answers yields no samples"


async def test_reconnects_after_the_plc_restarts():
    port = free_port()
    cfg = two_devices(port, free_port())
    device, tags = cfg.devices[0], cfg.tags_of("live")
    sim = Simulation(cfg)
    server = ModbusFrontend(device, tags, sim)
    await server.start()
    items: list = []

    async def emit(batch):
        items.extend(batch)

    driver = ModbusDriver(device, tags)
    task = asyncio.create_task(run_device(driver, emit, backoff=Backoff(base=0.1, cap=0.5)))
    try:
        await asyncio.sleep(0.5)
        await server.stop()
        await asyncio.sleep(1.0)
        lost = [i for i in items if isinstance(i, DeviceStatus) and not i.connected]
        assert lost, "the sampler must report the device as gone"
        assert not driver.health.connected
        count_before = len(items)
        server = ModbusFrontend(device, tags, sim)
        await server.start()
        async with asyncio.timeout(5):
            while not (driver.health.connected and len(items) > count_before + 3):
                await asyncio.sleep(0.05)
        after = items[count_before:]
        assert any(isinstance(i, DeviceStatus) and i.connected for i in after)
        assert any(isinstance(i, Sample) and i.quality == Quality.GOOD for i in after)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()


class _Stuck:
    """A driver whose second read never returns (a wedged library call), to test the sampler's guard."""

    def __init__(self, device):
        self.device, self.tags, self.plan, self.reads = device, [], [object()], 0
        from drivers.base import Health

        self.health = Health()

    async def connect(self):
        pass

    async def close(self):
        pass

    async def read(self):
        self.reads += 1
        if self.reads == 2:
            await asyncio.Event().wait()
        return [Sample("t", self.reads, 0.0)]


async def test_a_read_that_never_returns_is_cut_by_the_guard_and_the_device_reconnects():
    from types import SimpleNamespace

    device = SimpleNamespace(name="wedged", timeout=0.1, poll_interval=0.01, mode="poll")
    driver = _Stuck(device)
    items: list = []

    async def emit(batch):
        items.extend(batch)

    task = asyncio.create_task(run_device(driver, emit, backoff=Backoff(base=0.01, cap=0.02)))
    for _ in range(200):  # the guard is 3 x 0.1 s; a few more seconds would mean it never fired
        await asyncio.sleep(0.02)
        if driver.reads >= 3:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert driver.reads >= 3, "the wedged read was never cut"
    down = [i for i in items if isinstance(i, DeviceStatus) and not i.connected]
    assert down and "read did not finish within 0.3s" in down[0].error
    assert driver.health.errors >= 1


async def test_the_guard_does_not_fire_while_waiting_between_slow_polls():
    from types import SimpleNamespace

    device = SimpleNamespace(name="slow", timeout=0.02, poll_interval=0.3, mode="poll")  # guard 0.06 s << 0.3 s

    class Quick(_Stuck):
        async def read(self):
            self.reads += 1
            return [Sample("t", self.reads, 0.0)]

    driver = Quick(device)
    items: list = []

    async def emit(batch):
        items.extend(batch)

    task = asyncio.create_task(run_device(driver, emit))
    await asyncio.sleep(1.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert driver.reads >= 3
    assert not [i for i in items if isinstance(i, DeviceStatus) and not i.connected], items


async def test_back_to_back_polls_that_never_wait_still_let_other_tasks_run():
    """A read that returns without I/O at a sub-millisecond interval must not starve the loop."""
    from types import SimpleNamespace

    from edge_agent.sampling import YIELD_EVERY

    class NoIO(_Stuck):
        async def read(self):  # never suspends: every request skipped, say
            self.reads += 1
            return [Sample("t", self.reads, 0.0)]

    driver = NoIO(SimpleNamespace(name="busy", timeout=1.0, poll_interval=0.0001, mode="poll"))

    async def emit(batch):
        pass

    ticks = 0

    async def other():
        nonlocal ticks
        while True:
            ticks += 1
            at = driver.reads
            await asyncio.sleep(0)
            assert driver.reads - at <= YIELD_EVERY + 1, "the poller held the loop longer than YIELD_EVERY polls"

    task = asyncio.create_task(run_device(driver, emit))
    watcher = asyncio.create_task(other())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not watcher.done(), watcher.exception()
    watcher.cancel()
    assert driver.reads > 100 and ticks > driver.reads / (YIELD_EVERY + 1) - 2


async def test_a_cancel_swallowed_inside_a_read_still_stops_the_poller():
    """asyncio.wait_for in Python 3.11 can swallow a cancellation when its result arrives at the
    same moment; the poller must still stop instead of polling on forever."""
    from types import SimpleNamespace

    class Swallowing(_Stuck):
        async def read(self):
            self.reads += 1
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass  # what the race does: the answer is returned, the cancel is gone
            return [Sample("t", self.reads, 0.0)]

    driver = Swallowing(SimpleNamespace(name="plc", timeout=1.0, poll_interval=0.01, mode="poll"))

    async def emit(batch):
        pass

    task = asyncio.create_task(run_device(driver, emit))
    await asyncio.sleep(0.2)
    task.cancel()  # once, as the daemon does first
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done, "the poller went on polling after its cancellation was swallowed"
    assert task.cancelled()
