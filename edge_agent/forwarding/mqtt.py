"""MQTT output (aiomqtt, QoS 1).

Rows leave the buffer only after the broker's PUBACK. Many publishes are in flight
at once; the cursor advances to the last row of the unbroken run of acknowledged
rows, so a connection drop mid-batch re-sends the rest (a duplicate carries the same
event_id and seq, which is how the MES drops it). aiomqtt does not reconnect by
itself: `run()` loops forever with capped backoff. The agent's status is a retained
`<prefix>/<site>/<area>/<line>/status` message, `offline` being the Last Will.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from buffer import AsyncBuffer, Row
from edge_agent import __version__
from edge_agent.config import MqttOutput
from edge_agent.model import now, rfc3339
from edge_agent.sampling import Backoff

log = logging.getLogger("edge_agent.forwarding.mqtt")

OnCommand = Callable[[str, bytes], Awaitable[None]]


def _tls_context(cfg: MqttOutput) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    if cfg.tls.cert_file:
        ctx.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None)
    if cfg.tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def state_topic(event_topic: str) -> str:
    """`<root>/event/state` -> `<root>/state`, the retained current-state topic."""
    return event_topic.rsplit("/event/", 1)[0] + "/state"


class MqttForwarder:
    name = "mqtt"

    def __init__(self, cfg: MqttOutput, buffer: AsyncBuffer, *, client_id: str, status_topic: str,
                 command_topics: list[str] = (), on_command: OnCommand | None = None):
        self.cfg, self.buffer = cfg, buffer
        self.client_id, self.status_topic = client_id, status_topic
        self.command_topics, self.on_command = list(command_topics), on_command
        self.wake = asyncio.Event()
        self.connected = False
        self.delivered = 0
        self.last_delivery: float | None = None
        self.started = rfc3339(now())

    async def run(self) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        cfg = self.cfg
        will = aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True)
        while True:
            try:
                tls = await asyncio.to_thread(_tls_context, cfg)  # reading certificates may block
                async with aiomqtt.Client(
                    cfg.host, cfg.effective_port, identifier=self.client_id, username=cfg.username,
                    password=cfg.password.get_secret_value() if cfg.password else None,
                    keepalive=int(cfg.keepalive), timeout=cfg.timeout, will=will, tls_context=tls,
                    max_inflight_messages=cfg.max_inflight, clean_session=True,
                ) as client:
                    client.pending_calls_threshold = cfg.max_inflight + 10
                    self.connected = True
                    backoff.reset()
                    log.info("event=mqtt_connected host=%s port=%d", cfg.host, cfg.effective_port)
                    await client.publish(self.status_topic, self._status("online"), qos=1, retain=True,
                                         timeout=cfg.timeout)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._forward(client), name="mqtt-forward")
                        if self.command_topics and self.on_command:
                            tg.create_task(self._listen(client), name="mqtt-commands")
            except* (aiomqtt.MqttError, OSError, ssl.SSLError) as group:
                self.connected = False
                delay = backoff.next()
                log.warning("event=mqtt_disconnected error=%r retry_in=%.1fs", str(group.exceptions[0]), delay)
                await asyncio.sleep(delay)

    def _status(self, state: str) -> bytes:
        return json.dumps({"status": state, "client_id": self.client_id, "version": __version__,
                           "started": self.started}).encode()

    async def _forward(self, client: aiomqtt.Client) -> None:
        sem = asyncio.Semaphore(self.cfg.max_inflight)

        async def publish(row: Row) -> None:
            async with sem:
                await client.publish(row.topic, row.payload, qos=1, timeout=self.cfg.timeout)
                if row.type == "state":
                    await client.publish(state_topic(row.topic), row.payload, qos=1, retain=True,
                                         timeout=self.cfg.timeout)

        while True:
            self.wake.clear()
            rows = await self.buffer.read(self.name, self.cfg.batch_size)
            if not rows:
                try:
                    async with asyncio.timeout(1.0):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                continue
            results = await asyncio.gather(*(publish(r) for r in rows), return_exceptions=True)
            done = next((i for i, r in enumerate(results) if isinstance(r, BaseException)), len(rows))
            if done:
                await self.buffer.ack(self.name, rows[done - 1].seq)
                self.delivered += done
                self.last_delivery = now()
            if done < len(rows):
                failure = results[done]
                if isinstance(failure, aiomqtt.MqttError):
                    raise failure
                raise aiomqtt.MqttError(f"publish failed: {failure!r}") from failure

    async def _listen(self, client: aiomqtt.Client) -> None:
        for topic in self.command_topics:
            await client.subscribe(topic, qos=1, timeout=self.cfg.timeout)
        async for message in client.messages:
            try:
                await self.on_command(str(message.topic), bytes(message.payload))
            except ValueError as e:
                log.warning("event=command_rejected topic=%s error=%r", message.topic, str(e))
