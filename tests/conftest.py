"""Shared fixtures: a real mosquitto broker, an MQTT collector, the agent as a process.

Everything binds to 127.0.0.1 on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
    if not found:
        pytest.fail("mosquitto is not installed: run `make test`, which installs it with apt")
    return found


class Broker:
    """A real mosquitto on loopback; persistent, so queued QoS 1 messages survive a restart."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = ""):
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nlog_dest file {workdir}/mosquitto.log\n{extra}"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def broker(tmp_path: Path):
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    b = Broker(workdir)
    b.start()
    yield b
    b.stop()


class Collector:
    """Subscribes to everything with a persistent session (QoS 1) and keeps what arrives."""

    def __init__(self, port: int, topic: str = "#"):
        self.port, self.topic = port, topic
        self.messages: list[tuple[str, dict | bytes, bool]] = []  # (topic, payload, retain)
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"collector-{id(self)}",
                                          clean_session=False, timeout=5) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for m in c.messages:
                        raw = bytes(m.payload)
                        try:
                            payload = json.loads(raw)
                        except ValueError:
                            payload = raw
                        self.messages.append((str(m.topic), payload, m.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def events(self, type_: str | None = None) -> list[dict]:
        return [p for t, p, _ in self.messages
                if "/event/" in t and isinstance(p, dict) and (type_ is None or p.get("type") == type_)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)


class FrozenClock:
    """A monotonic clock for the simulator that the test can stop and restart."""

    def __init__(self, frozen: bool = True):
        self._offset = time.monotonic()
        self._frozen_at: float | None = 0.0 if frozen else None

    def __call__(self) -> float:
        return self._frozen_at if self._frozen_at is not None else time.monotonic() - self._offset

    def freeze(self) -> None:
        self._frozen_at = self()

    def run(self) -> None:
        if self._frozen_at is not None:
            self._offset = time.monotonic() - self._frozen_at
            self._frozen_at = None


def modbus_line_config(tmp_path: Path, *, modbus_port: int, mqtt_port: int, poll: str = "100ms",
                       **overrides) -> dict:
    cfg = {
        "plant": {"site": "s1", "area": "a1", "line": "l1"},
        "machines": [{"id": "m1", "signals": {"run": "running", "part_counter": "parts"}}],
        "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": modbus_port,
                     "poll_interval": poll, "timeout": "1s"}],
        "tags": [
            {"name": "running", "device": "plc", "address": "coil:0", "type": "bool"},
            {"name": "parts", "device": "plc", "address": "hr:0", "type": "uint32"},
        ],
        "buffer": {"path": str(tmp_path / "buffer.db")},
        "outputs": {"mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "test",
                             "timeout": "3s"}},
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class AgentProcess:
    """`edge-agent run` as a real process, so tests can SIGKILL it."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = open(self.log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent did not stop within {timeout}s on SIGTERM")
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def agent_factory(tmp_path: Path):
    agents: list[AgentProcess] = []

    def make(config: Path) -> AgentProcess:
        a = AgentProcess(config, tmp_path / f"agent{len(agents)}.log")
        agents.append(a)
        return a

    yield make
    for a in agents:
        if a.proc and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
