"""Helpers for the Modbus tests: configs, a served device (real pymodbus server + driver), socat pty pairs."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

from drivers.modbus.driver import ModbusDriver
from edge_agent.config import Config, parse_config
from edge_agent.simulator import Simulation
from edge_agent.simulator.modbus import ModbusFrontend

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_device(**fields) -> dict:
    return {"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": free_port(),
            "timeout": "1s", **fields}


def make_config(device: dict, tags: list[dict], signals: dict | None = None) -> Config:
    tags = [{"device": device["name"], **t} for t in tags]
    return parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"},
        "machines": [{"id": "m1", "signals": signals or {}}],
        "devices": [device],
        "tags": tags,
    }, sort_keys=False, allow_unicode=True))


@asynccontextmanager
async def served(cfg: Config, *, server_tags=None, server_device=None, sim: Simulation | None = None):
    """A started ModbusFrontend for the config's first device and a connected ModbusDriver."""
    device = cfg.devices[0]
    tags = cfg.tags_of(device.name)
    frontend = ModbusFrontend(server_device or device, tags if server_tags is None else server_tags,
                              sim or Simulation(cfg))
    await frontend.start()
    driver = ModbusDriver(device, tags)
    try:
        await driver.connect()
        yield frontend, driver
    finally:
        await driver.close()
        await frontend.stop()


async def poll(frontend: ModbusFrontend, driver: ModbusDriver) -> tuple[dict, int]:
    """One read: ({tag: sample}, requests the server counted)."""
    before = frontend.requests
    samples = await driver.read()
    return {s.tag: s for s in samples}, frontend.requests - before


# ---------------------------------------------------------------- serial line through socat


def require_socat() -> str:
    """Path of socat. `make test` installs it (scripts/ensure-system-deps.sh); without it the RTU tests skip."""
    found = shutil.which("socat")
    if not found:
        pytest.skip("socat is missing: run `make test` as root, or `sudo apt-get install socat`")
    return found


class PtyPair:
    """Two pseudo-terminals wired together by socat: a serial cable on one machine."""

    def __init__(self, directory: Path):
        self.a, self.b = directory / "ttyA", directory / "ttyB"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        socat = require_socat()
        self.proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not (self.a.exists() and self.b.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                self.stop()
                raise RuntimeError(f"socat did not create the pty pair: {err}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


async def eventually(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
