"""Prometheus metrics (prometheus-client), served over HTTP on loopback by default.

`GET /metrics` on `metrics.listen` (default 127.0.0.1:9108; `metrics: {enabled: false}` turns it
off). The server is a few lines of asyncio in the agent's own loop, so every figure is read
in the loop thread, never across threads. Counters survive a SIGHUP reload (totals of the
retired pipeline are carried over). `GET /status` gives the same JSON as `edge-agent status`.

Names (all prefixed `edge_agent_`):
  device_reads_total, device_errors_total, device_connected, device_last_read_timestamp_seconds {device}
  poll_duration_seconds (histogram of one driver.read) {device}
  samples_total {device}, samples_per_second (last 10 s)
  events_total {type}
  buffer_depth, buffer_oldest_age_seconds, buffer_bytes, buffer_max_bytes, buffer_last_seq
  output_deliveries_total, output_retries_total, output_connected, output_last_delivery_timestamp_seconds {output}
  machine_state {machine, state} = 1 for the current state
  config_reloads_total, info {version}
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_agent import __version__

log = logging.getLogger("edge_agent.metrics")

RATE_WINDOW = 10  # seconds over which samples_per_second is averaged
HTTP_TIMEOUT = 5.0


class _RetryCounter(logging.Handler):
    """Fallback for an output that keeps no retry count of its own: counts its
    `event=<name>_disconnected` / `event=<name>_retry` log lines (one per failed round)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: dict[str, int] = collections.defaultdict(int)

    def emit(self, record: logging.LogRecord) -> None:
        word = str(record.msg).split(" ", 1)[0]
        if word.startswith("event=") and word.endswith(("_disconnected", "_retry")):
            self.counts[record.name.rsplit(".", 1)[-1]] += 1


def output_retries(output: Any, fallback: dict[str, int]) -> int:
    """Failed connection or delivery rounds of an output (each one is retried)."""
    if isinstance(getattr(output, "retries", None), int):
        return output.retries
    if isinstance(getattr(output, "connect_failures", None), int):
        return output.connect_failures + int(getattr(output, "publish_timeouts", 0) or 0)
    return fallback.get(output.name, 0)


class Metrics:
    """Process-wide figures; the live ones are read from the current agent at scrape time."""

    def __init__(self, supervisor: Any = None):
        self.supervisor = supervisor
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.poll_seconds = Histogram(
            "edge_agent_poll_duration_seconds", "Time one poll (driver.read) of a device took", ["device"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.samples = Counter("edge_agent_samples", "Samples read from devices", ["device"], registry=r)
        self.events = Counter("edge_agent_events", "Events committed to the buffer, by type", ["type"], registry=r)
        self.buffer_stats: dict[str, Any] | None = None
        self._carried_devices: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        self._carried_outputs: dict[str, int] = collections.defaultdict(int)
        self._carried_retries: dict[str, int] = collections.defaultdict(int)
        self._window: collections.deque[list[int]] = collections.deque()  # [second, samples]
        self._first: int | None = None
        self._retry_handler = _RetryCounter()
        logging.getLogger("edge_agent.forwarding").addHandler(self._retry_handler)
        r.register(_Live(self))

    def close(self) -> None:
        logging.getLogger("edge_agent.forwarding").removeHandler(self._retry_handler)

    # ------------------------------------------------------------ hooks the agent calls

    def instrument(self, driver: Any) -> None:
        """Time each `driver.read()` (the poll) without changing the driver."""
        read, name, hist = driver.read, driver.device.name, self.poll_seconds.labels(driver.device.name)

        async def timed_read():
            started = time.perf_counter()
            try:
                return await read()
            finally:
                hist.observe(time.perf_counter() - started)

        try:
            driver.read = timed_read
        except AttributeError:  # a slotted driver class: no poll durations for it
            log.debug("event=metrics_no_poll_timing device=%s", name)

    def sampled(self, device: str, n: int) -> None:
        if n:
            self.samples.labels(device).inc(n)
            second = int(time.monotonic())
            if self._first is None:
                self._first = second
            if self._window and self._window[-1][0] == second:
                self._window[-1][1] += n
            else:
                self._window.append([second, n])
                while self._window and self._window[0][0] <= second - RATE_WINDOW - 1:
                    self._window.popleft()

    def committed(self, events: list[Any]) -> None:
        for e in events:
            self.events.labels(e.type).inc()

    def retire(self, agent: Any) -> None:
        """A pipeline ends (reload): keep its totals so counters never go backwards."""
        for d in agent.drivers:
            c = self._carried_devices[d.device.name]
            c[0] += d.health.reads
            c[1] += d.health.errors
        for o in agent.outputs:
            self._carried_outputs[o.name] += getattr(o, "delivered", 0)
            self._carried_retries[o.name] += output_retries(o, self._retry_handler.counts)
        self._retry_handler.counts.clear()

    # ------------------------------------------------------------ reading

    def samples_per_second(self) -> float:
        now = int(time.monotonic())
        total = sum(n for s, n in self._window if now - RATE_WINDOW <= s < now)
        span = min(RATE_WINDOW, now - self._first) if self._first is not None else 0
        return total / span if span > 0 else 0.0

    async def refresh(self) -> None:
        """Fetch what lives on the buffer thread (bounded by a timeout)."""
        agent = self.supervisor.agent if self.supervisor else None
        if agent is None or agent.buffer.sync is None:
            return
        try:
            async with asyncio.timeout(HTTP_TIMEOUT):
                self.buffer_stats = await agent.buffer.stats()
        except TimeoutError:
            log.warning("event=metrics_buffer_timeout timeout=%.0fs", HTTP_TIMEOUT)
        except Exception as e:  # noqa: BLE001 -- the buffer may be closing during a reload
            log.debug("event=metrics_buffer_unavailable error=%r", str(e))

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)


def machine_state(deriver: Any) -> str | None:
    """The current machine state of a Deriver, whatever its internals look like."""
    for attr in ("current_state", "state", "_state"):
        value = getattr(deriver, attr, None)
        if isinstance(value, str):
            return value
    committed = getattr(deriver, "_committed", None)  # the full deriver: the last reported state
    if isinstance(committed, dict) and isinstance(committed.get("state"), str):
        return committed["state"]
    try:
        snap = deriver.snapshot()
    except Exception:  # noqa: BLE001 -- a deriver without snapshot support
        return None
    value = snap.get("state") if isinstance(snap, dict) else None
    if isinstance(value, dict):
        value = value.get("state") or value.get("current")
    return value if isinstance(value, str) else None


class _Live(Collector):
    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self):
        m = self.m
        sup = m.supervisor
        agent = getattr(sup, "agent", None)
        info = GaugeMetricFamily("edge_agent_info", "Agent version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        reloads = CounterMetricFamily("edge_agent_config_reloads", "Successful config reloads (SIGHUP)")
        reloads.add_metric([], getattr(sup, "reloads", 0))
        yield reloads
        rate = GaugeMetricFamily("edge_agent_samples_per_second", f"Samples read per second (last {RATE_WINDOW} s)")
        rate.add_metric([], m.samples_per_second())
        yield rate
        if agent is None:
            return
        reads = CounterMetricFamily("edge_agent_device_reads", "Successful polls of a device", labels=["device"])
        errors = CounterMetricFamily("edge_agent_device_errors", "Failed connects and lost connections of a device",
                                     labels=["device"])
        connected = GaugeMetricFamily("edge_agent_device_connected", "1 while the device is connected",
                                      labels=["device"])
        last = GaugeMetricFamily("edge_agent_device_last_read_timestamp_seconds",
                                 "UTC time of the last successful read", labels=["device"])
        for d in agent.drivers:
            name, h = d.device.name, d.health
            carried = m._carried_devices.get(name, (0, 0))
            reads.add_metric([name], carried[0] + h.reads)
            errors.add_metric([name], carried[1] + h.errors)
            connected.add_metric([name], 1 if h.connected else 0)
            if h.last_ok is not None:
                last.add_metric([name], h.last_ok)
        yield from (reads, errors, connected, last)

        states = GaugeMetricFamily("edge_agent_machine_state", "1 for the current state of a machine",
                                   labels=["machine", "state"])
        for machine, deriver in agent.derivers.items():
            state = machine_state(deriver)
            if state:
                states.add_metric([machine, state], 1)
        yield states

        stats = m.buffer_stats
        if stats:
            oldest = stats.get("oldest_ts")
            for name, help_, value in (
                ("edge_agent_buffer_depth", "Events in the buffer not yet acknowledged by every output", stats["depth"]),
                ("edge_agent_buffer_oldest_age_seconds", "Age of the oldest buffered event (0 when empty)",
                 max(0.0, time.time() - oldest) if oldest else 0.0),
                ("edge_agent_buffer_bytes", "Bytes used by the buffer file", stats["bytes"]),
                ("edge_agent_buffer_max_bytes", "Size cap of the buffer file", stats["max_bytes"]),
                ("edge_agent_buffer_last_seq", "Highest seq committed", stats["last_seq"]),
            ):
                g = GaugeMetricFamily(name, help_)
                g.add_metric([], value)
                yield g

        delivered = CounterMetricFamily("edge_agent_output_deliveries", "Events acknowledged by the output's peer",
                                        labels=["output"])
        retries = CounterMetricFamily("edge_agent_output_retries",
                                      "Failed connection or delivery rounds of an output (each is retried)",
                                      labels=["output"])
        up = GaugeMetricFamily("edge_agent_output_connected", "1 while the output is connected", labels=["output"])
        last_delivery = GaugeMetricFamily("edge_agent_output_last_delivery_timestamp_seconds",
                                          "UTC time of the last acknowledged delivery", labels=["output"])
        for o in agent.outputs:
            delivered.add_metric([o.name], m._carried_outputs.get(o.name, 0) + getattr(o, "delivered", 0))
            retries.add_metric([o.name], m._carried_retries.get(o.name, 0)
                               + output_retries(o, m._retry_handler.counts))
            up.add_metric([o.name], 1 if getattr(o, "connected", False) else 0)
            if getattr(o, "last_delivery", None) is not None:
                last_delivery.add_metric([o.name], o.last_delivery)
        yield from (delivered, retries, up, last_delivery)


# ---------------------------------------------------------------- HTTP


async def serve_metrics(supervisor: Any) -> None:
    """`GET /metrics` (and `/status`) until cancelled; a busy port is logged, never fatal."""
    host, port = supervisor.cfg.metrics.host_port
    async with asyncio.TaskGroup() as tg:
        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tg.create_task(_handle(supervisor, reader, writer), name="metrics-request")

        try:
            server = await asyncio.start_server(accept, host, port)
        except OSError as e:
            log.error("event=metrics_unavailable listen=%s:%d error=%r", host, port, e.strerror or str(e))
            return
        log.info("event=metrics_listening listen=%s:%d", host, port)
        try:
            async with server:
                await asyncio.Event().wait()
        finally:
            server.close()


async def _handle(supervisor: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    from edge_agent.status import snapshot

    try:
        async with asyncio.timeout(HTTP_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, await supervisor.metrics.render()
            elif path == "/status":
                status, ctype = "200 OK", "application/json"
                body = json.dumps(await snapshot(supervisor)).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /status\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + (body if method != "HEAD" else b""))
            await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
        log.debug("event=metrics_request_failed error=%r", str(e))
    except Exception as e:  # noqa: BLE001 -- one bad request must never take the agent down with it
        log.warning("event=metrics_request_failed error=%r", repr(e))
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError) as e:
            log.debug("event=metrics_close_failed error=%r", str(e))
