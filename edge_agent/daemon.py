"""The agent: drivers -> sampling -> derivation -> buffer -> outputs, all in one TaskGroup.

Data flows one way. Device tasks put samples on a queue; one derivation task turns
them into events and commits events plus derivation state to the buffer in one
transaction per batch; outputs read the buffer after their own cursor and
acknowledge what the peer acknowledged. On SIGTERM the devices stop first, what is
queued is derived and committed, then the outputs stop: nothing in memory is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buffer import AsyncBuffer
from drivers import build_driver
from edge_agent.config import Config
from edge_agent.derivation import Deriver
from edge_agent.events import to_store
from edge_agent.forwarding.mqtt import MqttForwarder
from edge_agent.model import DeviceStatus, Event, Sample, now
from edge_agent.sampling import run_device

if TYPE_CHECKING:
    from edge_agent.forwarding.https import HttpsForwarder

log = logging.getLogger("edge_agent.daemon")

TICK_SECONDS = 1.0
STATE_FLUSH_SECONDS = 1.0
_STOP = object()


class _Tick:
    __slots__ = ("ts",)

    def __init__(self, ts: float):
        self.ts = ts


class _Command:
    __slots__ = ("machine", "command", "ts")

    def __init__(self, machine: str, command: dict[str, Any], ts: float):
        self.machine, self.command, self.ts = machine, command, ts


class Agent:
    def __init__(self, cfg: Config, *, config_path: Path | None = None, metrics: Any = None):
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics  # edge_agent.metrics.Metrics, or None
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        self.buffer = AsyncBuffer(
            cfg.buffer.resolved_path(), max_bytes=cfg.buffer.max_bytes, durability=cfg.buffer.durability,
            max_age=cfg.buffer.max_age, max_pending=cfg.buffer.memory_events,
            gap_topic=f"{cfg.line_root}/event/gap",
        )
        self.drivers = [build_driver(cfg, d) for d in cfg.devices]
        if metrics is not None:
            for d in self.drivers:
                metrics.instrument(d)
        self.outputs: list[MqttForwarder | HttpsForwarder] = []
        self.derivers: dict[str, Deriver] = {}
        self._persisted: dict[str, Any] = {}
        tag_device = {t.name: t.device for t in cfg.tags}
        # device -> machines whose signals it carries, to route DeviceStatus
        self._machines_of: dict[str, set[str]] = {}
        for m in cfg.machines:
            for _, tag in m.signals:
                if tag in tag_device:
                    self._machines_of.setdefault(tag_device[tag], set()).add(m.id)
        # device -> those machines in config order: a poll is derived only by the machines that read from
        # its device (was: every machine saw every sample, O(machines x tags) per second)
        self._route = {d: [m.id for m in cfg.machines if m.id in ms] for d, ms in self._machines_of.items()}
        self._tag_device = tag_device
        self.events_stored = 0
        self.ready = asyncio.Event()
        self._state_flushed = float("-inf")
        self.last_derive = time.monotonic()  # the watchdog's proof that derivation turns over

    async def run(self, stop: asyncio.Event) -> None:
        await self.buffer.open()
        try:
            await self._run(stop)
        finally:
            await self.buffer.close()

    async def _run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        tag_devices = {t.name: t.device for t in cfg.tags}
        for m in cfg.machines:
            state = await self.buffer.state(m.id)
            self.derivers[m.id] = Deriver(m, state, tag_devices=tag_devices)
            self._persisted[m.id] = self.derivers[m.id].snapshot()
        if cfg.outputs.mqtt:
            p = cfg.plant
            self.outputs.append(MqttForwarder(
                cfg.outputs.mqtt, self.buffer,
                client_id=cfg.outputs.mqtt.client_id or f"edge-agent-{p.site}-{p.area}-{p.line}",
                status_topic=f"{self.cfg.line_root}/status",
                command_topics=[f"{cfg.topic_root(m.id)}/cmd/+" for m in cfg.machines],
                on_command=self._on_command,
            ))
        if cfg.outputs.https:  # its own cursor over the same buffer
            from edge_agent.forwarding.https import HttpsForwarder  # httpx costs ~5 MB: only when used

            p = cfg.plant
            self.outputs.append(HttpsForwarder(cfg.outputs.https, self.buffer, line=f"{p.site}/{p.area}/{p.line}"))
        await self.buffer.register_outputs([o.name for o in self.outputs])
        async with asyncio.TaskGroup() as tg:
            devices = [
                tg.create_task(run_device(d, self._emitter(d.device.name), subscribe=getattr(d.device, "mode", "poll") == "subscribe"),
                               name=f"device:{d.device.name}")
                for d in self.drivers
            ]
            derive = tg.create_task(self._derive(), name="derive")
            ticker = tg.create_task(self._tick(), name="tick")
            outputs = [tg.create_task(o.run(), name=f"output:{o.name}") for o in self.outputs]
            self.ready.set()
            log.info("event=agent_started devices=%d machines=%d outputs=%d buffer=%s",
                     len(self.drivers), len(cfg.machines), len(self.outputs), cfg.buffer.resolved_path())
            await stop.wait()
            log.info("event=agent_stopping")
            await _cancel_all(devices + [ticker])
            await self.queue.put(_STOP)  # derive what is queued, commit it, then end
            await derive
            for t in outputs:
                t.cancel()
        log.info("event=agent_stopped events_stored=%d", self.events_stored)

    async def _emit(self, items: list[Sample | DeviceStatus]) -> None:
        await self.queue.put(items)

    def _emitter(self, device: str):
        if self.metrics is None:
            return self._emit

        async def emit(items: list[Sample | DeviceStatus]) -> None:
            # a poll or a subscription delivers samples only; a status change comes alone
            self.metrics.sampled(device, len(items) if items and isinstance(items[0], Sample) else 0)
            await self.queue.put(items)

        return emit

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            await self.queue.put(_Tick(now()))

    async def _on_command(self, topic: str, payload: bytes) -> None:
        machine = topic.split("/")[-3]
        if machine not in self.derivers:
            raise ValueError(f"unknown machine {machine!r}")
        try:
            command = json.loads(payload)
        except json.JSONDecodeError as e:
            raise ValueError(f"command is not JSON: {e}") from None
        if not isinstance(command, dict):
            raise ValueError("command must be a JSON object")
        command.setdefault("command", topic.rsplit("/", 1)[-1])
        await self.queue.put(_Command(machine, command, now()))

    async def _derive(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # a poller that just handed over its samples is ready too: let it send its next request
            # first, so derivation runs while it waits for the answer instead of before it asks
            await asyncio.sleep(0)
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stop = any(item is _STOP for item in batch)
            await self._apply([item for item in batch if item is not _STOP], force=stop)
            self.last_derive = time.monotonic()
            if stop:
                return

    def _machines_reading(self, item: list[Sample | DeviceStatus]) -> list[str]:
        """The machines with a signal on the device(s) of this poll (a poll is one device's), in config order."""
        route = self._route
        if not item:
            return []
        first = item[0]
        device = first.device if isinstance(first, DeviceStatus) else self._tag_device.get(first.tag)
        last = item[-1]
        if len(item) > 1 and device != (last.device if isinstance(last, DeviceStatus) else self._tag_device.get(last.tag)):
            devices = {x.device if isinstance(x, DeviceStatus) else self._tag_device.get(x.tag) for x in item}
            wanted = {m for d in devices for m in route.get(d, ())}
            return [m for m in self.derivers if m in wanted]
        return route.get(device, [])

    async def _apply(self, batch: list, force: bool = False) -> None:
        events = []
        for item in batch:
            if isinstance(item, list):
                for machine in self._machines_reading(item):
                    events.extend(self.derivers[machine].step(item))
            elif isinstance(item, _Tick):
                for deriver in self.derivers.values():
                    events.extend(deriver.tick(item.ts))
            elif isinstance(item, _Command):
                try:
                    events.extend(self.derivers[item.machine].command(item.command, item.ts))
                except ValueError as e:
                    log.warning("event=command_rejected machine=%s error=%r", item.machine, str(e))
        if not events and not force and time.monotonic() - self._state_flushed < STATE_FLUSH_SECONDS:
            return  # state alone (no event) is looked at and committed at most every STATE_FLUSH_SECONDS
        self._state_flushed = time.monotonic()
        changed = {}
        for machine, deriver in self.derivers.items():
            snap = deriver.snapshot()  # a deep copy: not for every poll
            if snap != self._persisted[machine]:
                changed[machine] = snap
        if not events and not changed:
            return
        rows = await self.buffer.append([to_store(self.cfg, e) for e in events], changed)
        self._persisted.update(changed)
        self._remember_downtime_ids(rows)
        self.events_stored += len(events)
        if self.metrics is not None:
            self.metrics.committed(events)
        for o in self.outputs:
            o.wake.set()


    def _remember_downtime_ids(self, rows) -> None:
        """The MES may classify a downtime by the event_id it received: tell derivation which ids those are.

        Rows can include events committed late (after a disk error) and gap events, so each
        downtime row is matched by its own payload, not by position.
        """
        stored = [(r.event_id, Event(r.type, p["machine"], r.ts, p))
                  for r in rows if r.type in ("downtime", "downtime_update") for p in [json.loads(r.payload)]]
        if stored:
            for deriver in self.derivers.values():
                deriver.remember_event_ids(stored)


async def _cancel_all(tasks: list[asyncio.Task], grace: float = 1.0) -> None:
    """Cancel tasks and wait until they have ended, cancelling again any that outlive `grace`:
    a library may swallow one cancellation (asyncio.wait_for in Python 3.11 does when the
    awaited result arrives at the same moment), and a stop must never hang on that."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            log.warning("event=cancel_repeated tasks=%s", ",".join(sorted(t.get_name() for t in pending)))


async def run_agent(cfg: Config, *, config_path: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the config; sd_notify, watchdog, status
    socket and metrics around the Agent (see edge_agent/service.py)."""
    from edge_agent.service import Supervisor

    await Supervisor(cfg, config_path=config_path).run()
