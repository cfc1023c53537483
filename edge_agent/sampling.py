"""Sampling: one task per device, polling on its own drift-free schedule.

A slow or dead device only ever delays its own task. Connection loss closes the
driver, reports the device as away (derivation turns that into not_available) and
reconnects with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from drivers.base import Driver, Subscriber
from edge_agent.errors import ConnectionLost, DeviceRejected
from edge_agent.model import DeviceStatus, Sample, now

log = logging.getLogger("edge_agent.sampling")

Emit = Callable[[list[Sample | DeviceStatus]], Awaitable[None]]


class Backoff:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random):
        self.base, self.cap, self._rng, self.attempt = base, cap, rng, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return delay / 2 + self._rng() * delay / 2

    def reset(self) -> None:
        self.attempt = 0


def next_deadline(deadline: float, interval: float, current: float) -> tuple[float, int]:
    """The next tick on the grid `deadline + k*interval` that is still ahead; and how many were missed.

    Ticks stay on the grid set at connect time, so the schedule never drifts however
    long reads take; a read longer than the interval skips ticks instead of bunching them.
    """
    deadline += interval
    if deadline > current:
        return deadline, 0
    missed = int((current - deadline) // interval) + 1
    if deadline + missed * interval <= current:  # float rounding landed exactly on "now"
        missed += 1
    return deadline + missed * interval, missed


# epoll waits in whole milliseconds (CPython rounds a shorter timeout up to 1 ms), so a
# shorter sleep lasts a millisecond: longer than the interval it was meant to keep
TIMER_GRANULARITY = 0.001
# Back-to-back polls yield to the loop at least this often. A read that waits for its device
# yields anyway (and derivation runs in that wait); this bounds a read that returns without
# I/O (every request skipped as a known-bad tag, say) so it cannot starve the other tasks.
YIELD_EVERY = 8


def pause(deadline: float, current: float) -> float:
    """How long to sleep until `deadline`: 0 (just yield) when it is closer than the timer granularity.

    With a sub-millisecond poll interval a real sleep would stretch every cycle to a
    millisecond; yielding instead polls back to back, as close to the interval as the
    device allows. The next deadline is still taken from the grid, so nothing drifts.
    """
    delay = deadline - current
    return delay if delay >= TIMER_GRANULARITY else 0.0


async def run_device(driver: Driver, emit: Emit, *, backoff: Backoff | None = None,
                     subscribe: bool = False) -> None:
    """Connect, poll (or subscribe) and reconnect forever; cancel to stop."""
    device = driver.device
    backoff = backoff or Backoff()
    health = driver.health
    reported_down = False
    while True:
        try:
            await driver.connect()
        except (ConnectionLost, DeviceRejected) as e:
            health.connected, health.last_error, health.errors = False, str(e), health.errors + 1
            rejected = isinstance(e, DeviceRejected)
            if not reported_down:
                log.warning("event=device_unreachable device=%s rejected=%s error=%r", device.name, rejected, str(e))
                await emit([DeviceStatus(device.name, False, now(), str(e))])
                reported_down = True
            await asyncio.sleep(backoff.cap if rejected else backoff.next())
            continue
        health.connected, reported_down = True, False
        backoff.reset()
        log.info("event=device_connected device=%s", device.name)
        await emit([DeviceStatus(device.name, True, now())])
        try:
            if subscribe and isinstance(driver, Subscriber):
                await driver.subscribe(emit)
            else:
                await _poll(driver, emit)
        except ConnectionLost as e:
            health.last_error, health.errors = str(e), health.errors + 1
            log.warning("event=device_disconnected device=%s error=%r", device.name, str(e))
        finally:
            health.connected = False
            try:
                async with asyncio.timeout(device.timeout):
                    await driver.close()
            except (TimeoutError, OSError) as e:
                log.warning("event=device_close_failed device=%s error=%r", device.name, str(e))
        await emit([DeviceStatus(device.name, False, now(), health.last_error)])
        reported_down = True
        await asyncio.sleep(backoff.next())


def read_guard(driver: Driver) -> float:
    """Seconds a whole read may take: above the driver's own per-request timeouts."""
    return driver.device.timeout * (2 + len(getattr(driver, "plan", ())))


async def _poll(driver: Driver, emit: Emit) -> None:
    loop = asyncio.get_running_loop()
    device, health = driver.device, driver.health
    interval = device.poll_interval
    deadline, polls, task = loop.time(), 0, asyncio.current_task()
    # One timer guards every read, so a wedged read cannot stall the task: armed for the read
    # only (an emit that waits for derivation to catch up is back-pressure, not a dead PLC).
    # Re-arming one Timeout costs less than entering a new one per poll (bench/, docs/performance.md).
    try:
        async with asyncio.timeout(None) as cut:
            while True:
                cut.reschedule(loop.time() + read_guard(driver))
                samples = await driver.read()
                cut.reschedule(None)
                if task.cancelling():  # a cancel a library swallowed (3.11's wait_for can): honour it now
                    raise asyncio.CancelledError
                health.reads += 1
                health.last_ok = now()
                await emit(samples)
                deadline, missed = next_deadline(deadline, interval, loop.time())
                if missed:
                    log.debug("event=poll_overrun device=%s missed=%d", device.name, missed)
                delay = pause(deadline, loop.time())
                polls += 1
                if delay or polls % YIELD_EVERY == 0:
                    await asyncio.sleep(delay)
    except TimeoutError:
        raise ConnectionLost(device.name, f"read did not finish within {read_guard(driver):.1f}s") from None
