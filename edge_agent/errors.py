"""One error hierarchy for the whole agent.

The engine decides by type: a `ConnectionLost` means reconnect with backoff,
a `DeviceRejected` means the peer refused us for a reason retrying will not fix
(bad credentials, untrusted certificate) so we back off to the maximum and say
so once, and a `ConfigError` stops start-up with a message naming file, line and field.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A config file is invalid; carries one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class DriverError(EdgeAgentError):
    """Something went wrong talking to a device."""

    def __init__(self, device: str, message: str, *, address: str | None = None):
        self.device = device
        self.address = address
        where = f"{device}" + (f" {address}" if address else "")
        super().__init__(f"{where}: {message}")


class ConnectionLost(DriverError):
    """The connection to the device is gone (or never came up); reconnect with backoff."""


class DeviceRejected(DriverError):
    """The device refused us (credentials, certificate, policy); retrying will not help soon."""
