"""OPC UA tag addresses (node ids) and data types. Pure: no asyncua import.

A tag address is a node id in the OPC UA text form, with the namespace given by
index or, better, by URI (the index can change when the server restarts):

    nsu=urn:acme:press;s=Line3.Press.Counter     namespace by URI (resolved at connect)
    ns=2;s=Line3.Press.Counter                   namespace by index
    i=2258  ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63  ns=1;b=M/RbKBsRVkePCePcx24oRA==

Identifier kinds: i (numeric), s (string), g (GUID), b (opaque, base64).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any

# Config type name -> OPC UA built-in type name (the VariantType member asyncua uses).
TYPES: dict[str, str] = {
    "Boolean": "Boolean",
    "Int16": "Int16", "UInt16": "UInt16",
    "Int32": "Int32", "UInt32": "UInt32",
    "Int64": "Int64", "UInt64": "UInt64",
    "Float": "Float", "Double": "Double",
    "String": "String", "DateTime": "DateTime",
}
_TYPES_FOLDED = {k.lower(): k for k in TYPES}
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "Int16": (-(2**15), 2**15 - 1), "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1), "UInt64": (0, 2**64 - 1),
}
NUMERIC = set(INTEGER_RANGES) | {"Float", "Double"}

_NODE_ID = re.compile(r"^(?:ns=(?P<ns>\d+);|nsu=(?P<nsu>[^;]+(?:;[^;]+)*?);)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)
_EXAMPLE = "e.g. nsu=urn:acme:press;s=Line3.Press.Counter or ns=2;s=Counter or i=2258"


class TypeMismatch(ValueError):
    """The tag's `type` is not an OPC UA type the driver reads."""

    field = "type"


@dataclass(frozen=True, slots=True)
class NodeAddress:
    kind: str  # i | s | g | b
    identifier: int | str | uuid.UUID | bytes
    namespace_index: int | None = None  # ns=…
    namespace_uri: str | None = None  # nsu=…

    def text(self, index: int | None = None) -> str:
        """The node id text, with a resolved namespace index if given (for messages)."""
        ident = self.identifier
        if self.kind == "b":
            ident = base64.b64encode(ident).decode()  # type: ignore[arg-type]
        ns = index if index is not None else self.namespace_index
        if self.namespace_uri is not None and index is None:
            return f"nsu={self.namespace_uri};{self.kind}={ident}"
        return (f"ns={ns};" if ns else "") + f"{self.kind}={ident}"


@dataclass(frozen=True, slots=True)
class OpcUaAddress:
    node: NodeAddress
    data_type: str  # canonical name, one of TYPES


def parse_node_id(text: str) -> NodeAddress:
    """`nsu=…;s=…` / `ns=2;i=5` / `g=…` / `b=…` -> NodeAddress; ValueError with a clear message otherwise."""
    m = _NODE_ID.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"bad OPC UA node id {text!r}: expected [ns=<index>;|nsu=<uri>;]<i|s|g|b>=<id>, {_EXAMPLE}")
    kind, raw = m.group("kind"), m.group("ident")
    ns_index = int(m.group("ns")) if m.group("ns") is not None else None
    if ns_index is not None and ns_index > 65535:
        raise ValueError(f"bad OPC UA node id {text!r}: namespace index {ns_index} is above 65535")
    ident: int | str | uuid.UUID | bytes
    if kind == "i":
        if not raw.isdigit() or int(raw) > 2**32 - 1:
            raise ValueError(f"bad OPC UA node id {text!r}: i= needs a number 0..4294967295")
        ident = int(raw)
    elif kind == "g":
        try:
            ident = uuid.UUID(raw)
        except ValueError:
            raise ValueError(f"bad OPC UA node id {text!r}: g= needs a GUID such as 72962b91-fa75-4ae6-8d28-b404dc7daf63") from None
    elif kind == "b":
        try:
            ident = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"bad OPC UA node id {text!r}: b= needs base64 data") from None
    else:
        ident = raw
    nsu = m.group("nsu")
    if ns_index is None and nsu is None:
        ns_index = 0
    return NodeAddress(kind, ident, ns_index, nsu)


def parse_type(data_type: str) -> str:
    canonical = _TYPES_FOLDED.get(str(data_type).lower())
    if canonical is None:
        raise TypeMismatch(f"type {data_type!r} is not an OPC UA type the driver reads (one of {', '.join(TYPES)})")
    return canonical


def parse(address: str, data_type: str, device: Any = None) -> OpcUaAddress:
    """Check a tag: its address must be a node id and its type one of TYPES."""
    node = parse_node_id(address)
    return OpcUaAddress(node, parse_type(data_type))
