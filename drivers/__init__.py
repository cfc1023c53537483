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


def check_address(device: Any, address: str, data_type: str) -> None:
    """Raise ValueError (with `.field = "type"` for a type problem) if a tag cannot be read."""
    _, module = REGISTRY[device.protocol]
    importlib.import_module(module).parse(address, data_type, device)
