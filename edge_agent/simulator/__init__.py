"""`edge-agent simulate`: serve simulated machines on the endpoints a config names.

Each machine in the config gets a `SimulatedMachine`; every tag bound to one of its
signals is served with the machine's value at the tag's address. Other tags get a
slow ramp so a technician sees values move. Frontends are one module per protocol.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_agent.config import Config
from edge_agent.simulator.machine import SimulatedMachine

log = logging.getLogger("edge_agent.simulator")

FRONTENDS = {
    "modbus_tcp": "edge_agent.simulator.modbus:ModbusFrontend",
    "modbus_rtu": "edge_agent.simulator.modbus:ModbusFrontend",
    "opcua": "edge_agent.simulator.opcua:OpcUaFrontend",
    "s7": "edge_agent.simulator.s7:S7Frontend",
}


@dataclass
class Simulation:
    """The simulated plant for one config: machines plus tag -> value binding."""

    cfg: Config
    machines: dict[str, SimulatedMachine] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        for i, m in enumerate(self.cfg.machines):
            self.machines.setdefault(m.id, SimulatedMachine(seed=i + 1))
        self._bound: dict[str, tuple[str, str]] = {}  # tag -> (machine, signal)
        for m in self.cfg.machines:
            for signal, tag in m.signals:
                if tag is not None:
                    self._bound[tag] = (m.id, signal)
        self._t0 = self.clock()

    def tag_values(self, tags) -> dict[str, object]:
        """Current value of each of these tags (advancing the machines to now)."""
        t = self.clock()
        for m in self.machines.values():
            m.advance(t)
        out = {}
        for tag in tags:
            bound = self._bound.get(tag.name)
            if bound:
                out[tag.name] = self.machines[bound[0]].values()[bound[1]]
            else:
                out[tag.name] = int(t - self._t0) % 100  # a slow ramp for unbound tags
        return out


async def serve(cfg: Config, sim: Simulation | None = None, *, ready: asyncio.Event | None = None) -> None:
    """Serve every device of the config until cancelled."""
    sim = sim or Simulation(cfg)
    frontends = []
    for device in cfg.devices:
        module, cls = FRONTENDS[device.protocol].split(":")
        frontend = getattr(importlib.import_module(module), cls)(device, cfg.tags_of(device.name), sim)
        await frontend.start()
        frontends.append(frontend)
        log.info("event=simulator_listening device=%s protocol=%s", device.name, device.protocol)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        for f in frontends:
            await f.stop()
