"""Helpers for the service, CLI and metrics tests: the agent process with a systemd-like
environment, a real NOTIFY_SOCKET, the CLI as a subprocess, a metrics scrape."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import ROOT, AgentProcess


class ServiceAgent(AgentProcess):
    """`edge-agent run` with extra environment (NOTIFY_SOCKET, WATCHDOG_USEC, secrets)."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None):
        super().__init__(config, log)
        self.env = env or {}

    def start(self) -> None:
        self._log = open(self.log, "ab")  # noqa: SIM115 -- the agent process writes it; stop() closes it
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(self.config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}) before logging {text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the agent log after {timeout}s:\n{self.output()[-3000:]}")
            await asyncio.sleep(0.05)


class NotifySocket:
    """A real unix datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: Path | None = None, abstract: str | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.address = "@" + abstract
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                raw = self.sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
        return [m for _, m in self.messages]

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        self.drain()
        return [(t, m) for t, m in self.messages if key in m]

    async def wait_for(self, key: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while len(self.with_key(key)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count}x {key} not received within {timeout}s; got {self.drain()}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.sock.close()


async def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    """`edge-agent ARGS` as a subprocess, without blocking the test's loop (a simulator may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_agent", *args, cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """All samples of /metrics as {(name, sorted label items): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def status_json(config: Path) -> dict:
    code, out, err = await cli("status", "--config", str(config), "--json")
    assert code == 0, (code, out, err)
    return json.loads(out)
