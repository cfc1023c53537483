"""OPC UA frontend of the simulator (asyncua server bound to 127.0.0.1 on the device URL's port).

Each tag of the device becomes a variable at its node id (namespace URIs named by the
tags are registered; `ns=N` indexes are padded with placeholder namespaces), of the
tag's type, under Objects/<device>. The machines' own signals are also served under
Objects/Machines/<machine>/<signal> in namespace `urn:edge-agent:simulator`, so a
technician browsing the simulator sees counter, state and cycle variables.
Values are refreshed from the simulation every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from urllib.parse import urlparse

from asyncua import Server, ua

from drivers.opcua.address import INTEGER_RANGES, OpcUaAddress, parse
from drivers.opcua.driver import resolve

log = logging.getLogger("edge_agent.simulator")

SIM_NAMESPACE = "urn:edge-agent:simulator"
UPDATE_INTERVAL = 0.05
# machine signal -> OPC UA type
SIGNAL_TYPES = {
    "run": "Boolean", "part_counter": "UInt32", "good_counter": "UInt32", "scrap_counter": "UInt32",
    "cycle_counter": "UInt32", "fault": "Boolean", "fault_code": "UInt16", "cycle_time": "Double",
    "reason_code": "UInt16", "cycle_complete": "Boolean", "mode": "UInt16", "setup": "Boolean",
    "packml_state": "UInt16", "execution": "String",
}


def to_variant(value: object, data_type: str) -> ua.Variant:
    vt = ua.VariantType[data_type]
    if data_type == "Boolean":
        return ua.Variant(bool(value), vt)
    if data_type in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[data_type]
        span = hi - lo + 1
        v = (int(value) - lo) % span + lo  # wrap like the PLC's integer does
        return ua.Variant(v, vt)
    if data_type in ("Float", "Double"):
        return ua.Variant(float(value), vt)
    if data_type == "DateTime":
        return ua.Variant(dt.datetime.now(dt.UTC), vt)
    return ua.Variant(str(value), vt)


class OpcUaFrontend:
    def __init__(self, device, tags, sim, *, extra_namespaces: list[str] | None = None):
        self.device, self.tags, self.sim = device, list(tags), sim
        self.extra_namespaces = list(extra_namespaces or [])  # registered first: shifts every other index
        self.addresses: dict[str, OpcUaAddress] = {t.name: parse(t.address, t.type) for t in self.tags}
        self.server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._signal_nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._last: dict[ua.NodeId, object] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        url = urlparse(self.device.url)
        port = url.port or 4840
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}{url.path or '/'}")
        server.socket_address = ("127.0.0.1", port)  # never 0.0.0.0
        server.set_server_name(f"edge-agent simulator {self.device.name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.disable_clock()
        await server.set_application_uri(SIM_NAMESPACE)  # namespace 1 is the server's application URI
        for uri in self.extra_namespaces:
            await server.register_namespace(uri)
        for addr in self.addresses.values():
            if addr.node.namespace_uri:
                await server.register_namespace(addr.node.namespace_uri)
        needed = max((a.node.namespace_index or 0 for a in self.addresses.values()), default=0)
        while len(await server.get_namespace_array()) <= needed:
            await server.register_namespace(f"urn:edge-agent:simulator:ns{len(await server.get_namespace_array())}")
        namespaces = await server.get_namespace_array()
        sim_ns = namespaces.index(SIM_NAMESPACE)

        objects = server.nodes.objects
        folder = await objects.add_folder(ua.NodeId(f"{self.device.name}", sim_ns), f"{sim_ns}:{self.device.name}")
        values = self.sim.tag_values(self.tags)
        for tag in self.tags:
            addr = self.addresses[tag.name]
            nodeid = resolve(addr.node, namespaces)
            ident = addr.node.identifier
            browse = str(ident).rsplit(".", 1)[-1] if addr.node.kind == "s" else tag.name
            var = await folder.add_variable(nodeid, ua.QualifiedName(browse, nodeid.NamespaceIndex),
                                            to_variant(values[tag.name], addr.data_type))
            self._nodes[tag.name] = var.nodeid

        machines = await objects.add_folder(ua.NodeId("Machines", sim_ns), f"{sim_ns}:Machines")
        for mid, machine in self.sim.machines.items():
            mfolder = await machines.add_folder(ua.NodeId(f"Machines.{mid}", sim_ns), f"{sim_ns}:{mid}")
            for signal, value in machine.values().items():
                dtype = SIGNAL_TYPES.get(signal, "Double")
                var = await mfolder.add_variable(ua.NodeId(f"{mid}.{signal}", sim_ns), f"{sim_ns}:{signal}",
                                                 to_variant(value, dtype))
                self._signal_nodes[(mid, signal)] = var.nodeid
        await server.start()
        self.server = server
        self._task = asyncio.create_task(self._update_loop(), name=f"opcua-sim:{self.device.name}")

    async def update(self) -> None:
        """Write the simulation's current values into the address space (only what changed)."""
        server = self.server
        if server is None:
            return
        values = self.sim.tag_values(self.tags)
        writes = [(self._nodes[t.name], values[t.name], self.addresses[t.name].data_type) for t in self.tags]
        for (mid, signal), node in self._signal_nodes.items():
            writes.append((node, self.sim.machines[mid].values()[signal], SIGNAL_TYPES.get(signal, "Double")))
        for node, value, dtype in writes:
            if dtype != "DateTime" and self._last.get(node) == value:
                continue
            self._last[node] = value
            await server.write_attribute_value(node, ua.DataValue(to_variant(value, dtype)))

    async def _update_loop(self) -> None:
        while True:
            try:
                await self.update()
            except (ua.UaError, ValueError, TypeError) as e:
                log.warning("event=simulator_update_failed device=%s error=%r", self.device.name, e)
            await asyncio.sleep(UPDATE_INTERVAL)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
