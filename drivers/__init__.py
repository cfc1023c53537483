"""Protocol drivers behind one small interface (see `drivers.base`).

The engine never imports a driver module directly: `load_driver` imports the one
a device needs, so a config without OPC UA never pays asyncua's start-up cost.
Each protocol also has a light `address` module (no protocol library imported)
that config validation uses to check tag addresses.
"""

from __future__ import annotations

import importlib
from typing import Any

# protocol -> (driver "module:Class", address module)
REGISTRY: dict[str, tuple[str, str]] = {
    "modbus_tcp": ("drivers.modbus.driver:ModbusDriver", "drivers.modbus.address"),
    "modbus_rtu": ("drivers.modbus.driver:ModbusDriver", "drivers.modbus.address"),
    "opcua": ("drivers.opcua.driver:OpcUaDriver", "drivers.opcua.address"),
    "s7": ("drivers.s7.driver:S7Driver", "drivers.s7.address"),
}


def load_driver(protocol: str) -> type:
    """The driver class for a protocol, imported on first use."""
    target, _ = REGISTRY[protocol]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_driver(cfg: Any, device: Any, tags: Any = None) -> Any:
    """The driver for one device of a config, with the tags it owns (or just `tags`).

    OPC UA keeps its application certificate beside the buffer (`<buffer dir>/pki`), so the
    daemon, `tags read` and `browse` all present the same certificate to the server.
    """
    cls = load_driver(device.protocol)
    tags = cfg.tags_of(device.name) if tags is None else tags
    if device.protocol == "opcua":
        return cls(device, tags, pki_dir=cfg.pki_dir)
    return cls(device, tags)


def check_address(device: Any, address: str, data_type: str) -> None:
    """Raise ValueError (with `.field = "type"` for a type problem) if a tag cannot be read."""
    _, module = REGISTRY[device.protocol]
    importlib.import_module(module).parse(address, data_type, device)
