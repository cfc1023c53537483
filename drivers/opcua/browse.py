"""Browse an OPC UA server's address space so a technician can pick tags.

`browse(device, path, depth)` walks hierarchical references from Objects (or from `path`:
browse names separated by `/`, e.g. `Press/Line3`, or a node id) down `depth` levels and
returns one dict per Object/Variable: path, browse name, node id with namespace URI (what
a tag's `address` takes), node class, data type and current value. Standard nodes
(namespace 0, e.g. the Server object) are skipped unless asked for.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from drivers.opcua.address import parse_node_id
from drivers.opcua.driver import OpcUaDriver, resolve
from edge_agent.config import OpcUaDevice
from edge_agent.errors import DriverError
from edge_agent.model import rfc3339

_BATCH = 200


def node_id_text(node: ua.NodeId, namespaces: list[str]) -> str:
    """`nsu=<uri>;s=…` for server namespaces (stable across restarts), `i=…` for namespace 0."""
    kind = {ua.NodeIdType.String: "s", ua.NodeIdType.Guid: "g", ua.NodeIdType.ByteString: "b"}.get(node.NodeIdType, "i")
    ident = node.Identifier
    if kind == "b":
        ident = base64.b64encode(ident).decode()
    idx = node.NamespaceIndex
    if idx == 0:
        prefix = ""
    elif idx < len(namespaces):
        prefix = f"nsu={namespaces[idx]};"
    else:
        prefix = f"ns={idx};"
    return f"{prefix}{kind}={ident}"


def jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dt.datetime):
        return rfc3339((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp())
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def type_name(node: ua.NodeId | None) -> str | None:
    if node is None or node.is_null():
        return None
    if node.NamespaceIndex == 0 and isinstance(node.Identifier, int):
        return ua.ObjectIdNames.get(node.Identifier, str(node.Identifier))
    return node.to_string()


class _Browser:
    def __init__(self, client: Client, namespaces: list[str], timeout: float, include_standard: bool):
        self.client, self.namespaces, self.timeout, self.include_standard = client, namespaces, timeout, include_standard

    async def children(self, nodes: list[ua.NodeId]) -> list[list[ua.ReferenceDescription]]:
        out: list[list[ua.ReferenceDescription]] = []
        for i in range(0, len(nodes), _BATCH):
            params = ua.BrowseParameters()
            params.View = ua.ViewDescription()
            params.RequestedMaxReferencesPerNode = 0
            params.NodesToBrowse = [
                ua.BrowseDescription(
                    NodeId=n, BrowseDirection=ua.BrowseDirection.Forward,
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IncludeSubtypes=True,
                    NodeClassMask=int(ua.NodeClass.Object) | int(ua.NodeClass.Variable),
                    ResultMask=int(ua.BrowseResultMask.All),
                ) for n in nodes[i:i + _BATCH]
            ]
            async with asyncio.timeout(self.timeout):
                results = await self.client.uaclient.browse(params)
            for r in results:
                refs = list(r.References or []) if r.StatusCode.is_good() else []
                if not self.include_standard:
                    refs = [ref for ref in refs if ref.NodeId.NamespaceIndex != 0]
                out.append(refs)
        return out

    async def types_and_values(self, nodes: list[ua.NodeId]) -> list[tuple[ua.NodeId | None, ua.DataValue | None]]:
        out: list[tuple[ua.NodeId | None, ua.DataValue | None]] = []
        for i in range(0, len(nodes), _BATCH):
            batch = nodes[i:i + _BATCH]
            params = ua.ReadParameters()
            for n in batch:
                params.NodesToRead.append(ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.DataType))
                params.NodesToRead.append(ua.ReadValueId(NodeId=n, AttributeId=ua.AttributeIds.Value))
            async with asyncio.timeout(self.timeout):
                values = await self.client.uaclient.read(params)
            for j in range(len(batch)):
                dtype, value = values[2 * j], values[2 * j + 1]
                out.append((dtype.Value.Value if dtype.StatusCode.is_good() and dtype.Value else None, value))
        return out

    async def start(self, path: str | None) -> tuple[ua.NodeId, str]:
        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        if not path or path.strip("/") in ("", "Objects"):
            return objects, "Objects"
        if "=" in path:
            try:
                return resolve(parse_node_id(path), self.namespaces), path
            except (ValueError, KeyError) as e:
                raise ValueError(f"cannot browse from {path!r}: {e}") from None
        parts = [p for p in path.strip("/").split("/") if p]
        if parts and parts[0] == "Objects":
            parts = parts[1:]
        node, walked = objects, "Objects"
        for part in parts:
            want_ns, _, want = part.rpartition(":")
            (refs,) = await _Browser(self.client, self.namespaces, self.timeout, True).children([node])
            match = next((r for r in refs if r.BrowseName.Name == want
                          and (not want_ns or str(r.BrowseName.NamespaceIndex) == want_ns)), None)
            if match is None:
                names = ", ".join(sorted(r.BrowseName.Name for r in refs)) or "nothing"
                raise ValueError(f"no {want!r} under {walked} (it has: {names})")
            node, walked = match.NodeId, f"{walked}/{match.BrowseName.Name}"
        return node, walked


async def browse(device: OpcUaDevice, path: str | None = None, depth: int = 3, *,
                 pki_dir: Path | None = None, include_standard: bool = False) -> list[dict]:
    """Objects and variables below `path` (default Objects), `depth` levels deep."""
    driver = OpcUaDriver(device, [], pki_dir=pki_dir)
    await driver.connect()
    try:
        client = driver._client
        assert client is not None
        browser = _Browser(client, driver.namespaces, device.timeout, include_standard)
        try:
            start, start_path = await browser.start(path)
        except ValueError as e:
            raise DriverError(device.name, str(e)) from None
        entries: list[dict] = []
        frontier = [(start, start_path)]
        for level in range(1, max(depth, 1) + 1):
            if not frontier:
                break
            found = await browser.children([n for n, _ in frontier])
            next_frontier = []
            variables: list[tuple[dict, ua.NodeId]] = []
            for (_, parent_path), refs in zip(frontier, found, strict=True):
                for ref in refs:
                    node = ref.NodeId
                    entry = {
                        "path": f"{parent_path}/{ref.BrowseName.Name}",
                        "browse_name": ref.BrowseName.Name,
                        "node_id": node_id_text(node, driver.namespaces),
                        "node_class": ref.NodeClass.name,
                        "data_type": None,
                        "value": None,
                        "depth": level,
                    }
                    entries.append(entry)
                    next_frontier.append((node, entry["path"]))
                    if ref.NodeClass == ua.NodeClass.Variable:
                        variables.append((entry, node))
            for (entry, _), (dtype, dv) in zip(variables, await browser.types_and_values([n for _, n in variables]),
                                               strict=True):
                entry["data_type"] = type_name(dtype)
                if dv is not None and dv.StatusCode.is_good() and dv.Value is not None:
                    entry["value"] = jsonable(dv.Value.Value)
                elif dv is not None:
                    entry["status"] = dv.StatusCode.name
            frontier = next_frontier
        return entries
    except (TimeoutError, OSError, ConnectionError, ua.UaError) as e:
        raise DriverError(device.name, f"browse failed: {e or type(e).__name__}") from None
    finally:
        await driver.close()


def render_json(entries: list[dict]) -> str:
    import json

    return json.dumps(entries, indent=2, ensure_ascii=False)


def render_text(entries: list[dict]) -> str:
    """Aligned columns for a terminal: path, node id (paste into a tag's address), type, value."""
    if not entries:
        return "(nothing below this node)"
    header = ("PATH", "NODE ID", "TYPE", "VALUE")
    rows = [(e["path"], e["node_id"], e["data_type"] or ("" if e["node_class"] == "Object" else "?"),
             "" if e["node_class"] == "Object" else str(e.get("status") or e["value"])) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
