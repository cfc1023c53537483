"""The driver interface every protocol implements.

A driver is built from its device config and the tags it owns; it plans its reads
once (a pure function per protocol) and then `read()` executes that plan:

    driver = DriverClass(device, tags)
    await driver.connect()        # raises ConnectionLost / DeviceRejected
    samples = await driver.read() # one Sample per tag; a tag that failed has quality BAD
    await driver.close()

`read()` raises `ConnectionLost` when the connection itself is gone: the sampler then
closes, backs off and reconnects. Per-tag problems (an illegal address, an access
error on one DB) never raise: they come back as BAD samples naming the reason.
A driver that can push values (OPC UA subscriptions) also implements `Subscriber`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edge_agent.config import Tag
from edge_agent.model import Sample


@dataclass(slots=True)
class Health:
    """What maintenance wants to know about a device connection."""

    connected: bool = False
    last_error: str | None = None
    last_ok: float | None = None  # UTC epoch of the last successful read
    reads: int = 0
    errors: int = 0
    requests: int = 0  # protocol requests sent, for checking the read planner


@runtime_checkable
class Driver(Protocol):
    device: Any
    tags: Sequence[Tag]
    health: Health

    async def connect(self) -> None: ...

    async def read(self) -> list[Sample]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Subscriber(Protocol):
    """Optional: a driver that delivers samples as the device reports changes."""

    async def subscribe(self, deliver: Callable[[list[Sample]], Awaitable[None]]) -> None: ...


def scaled(tag: Tag, value: Any) -> Any:
    """Apply a tag's gain/offset to a numeric raw value (bools and strings pass through)."""
    if tag.scale is None or isinstance(value, (bool, str)) or value is None:
        return value
    return value * tag.scale.gain + tag.scale.offset
