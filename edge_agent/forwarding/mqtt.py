"""MQTT output (aiomqtt, QoS 1, MQTT 3.1.1 or 5).

Rows leave the buffer only after the broker's PUBACK. Many publishes are in flight
at once; every awaited publish is bounded by `timeout`, so a broker that stops
answering (or a dropped connection) never hangs the forwarder: the publish fails,
the connection is torn down and rebuilt with capped backoff (aiomqtt does not
reconnect by itself). The cursor advances over the unbroken run of acknowledged
rows, so a drop mid-batch re-sends the rest (same event_id and seq: the MES drops
the duplicate). Backlog replay and live events: see replay.py.

The agent's status is a retained `<prefix>/<site>/<area>/<line>/status` message:
`online` with version and start time on every connect, `offline` as the Last Will.

TLS is on with server verification for any broker not on loopback (see
`MqttOutput.effective_tls`); certificates are loaded off the event loop.
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
from edge_agent.config import MqttOutput, Tls
from edge_agent.forwarding.replay import TokenBucket, is_historical, mark_historical
from edge_agent.model import now, rfc3339
from edge_agent.sampling import Backoff

log = logging.getLogger("edge_agent.forwarding.mqtt")

OnCommand = Callable[[str, bytes], Awaitable[None]]


def tls_context(tls: Tls | None, *, purpose: str = "broker") -> ssl.SSLContext | None:
    """A client SSL context: verify the server (system CAs or `ca_file`), optional client certificate.

    Blocking (reads files): call it through asyncio.to_thread.
    """
    if tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        log.warning("event=tls_insecure purpose=%s (server certificate NOT verified)", purpose)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe_error(exc: BaseException, *, tls_handshake: bool = False) -> str:
    """One clear line for the log, with a hint for the errors a technician can fix.

    `tls_handshake`: the error came while connecting with TLS (a plain listener resets the connection).
    """
    text = str(exc)
    if tls_handshake and ("reset by peer" in text or "EOF" in text or "UNEXPECTED_EOF" in text):
        return (f"TLS handshake failed ({text}): the server closed the connection; it may not speak TLS on this "
                "port. TLS is on by default for servers not on loopback (set the TLS port, or tls: false on a "
                "trusted network)")
    if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({text}); check tls.ca_file and the host name"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return (f"TLS handshake failed ({text}): the server does not speak TLS on this port; TLS is on by default "
                "for servers not on loopback (set the TLS port, or tls: false on a trusted network)")
    if "SSL" in text or isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({text}); check the client certificate (tls.cert_file/key_file) and CA"
    if "Not authorized" in text or "Bad user name or password" in text:
        return f"the broker refused the credentials ({text}); check username/password"
    return text


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
        self.historical_sent = 0
        self.publish_timeouts = 0
        self.connect_failures = 0
        self.last_error: str | None = None
        self.last_delivery: float | None = None
        self.started = rfc3339(now())
        self.v5 = cfg.protocol == "5"
        self._bucket = TokenBucket(cfg.replay_rate)
        self._retained_state_seq: dict[str, int] = {}

    async def run(self) -> None:
        backoff = Backoff(base=0.5, cap=30.0)
        cfg = self.cfg
        will = aiomqtt.Will(self.status_topic, self._status("offline"), qos=1, retain=True)
        tls_cfg = cfg.effective_tls
        while True:
            try:
                tls = None
                tls = await asyncio.to_thread(tls_context, tls_cfg)  # reading certificates may block
                async with aiomqtt.Client(
                    cfg.host, cfg.effective_port, identifier=self.client_id, username=cfg.username,
                    password=cfg.password.get_secret_value() if cfg.password else None,
                    keepalive=int(cfg.keepalive), timeout=cfg.timeout, will=will, tls_context=tls,
                    max_inflight_messages=cfg.max_inflight, **self._session_args(),
                ) as client:
                    client.pending_calls_threshold = cfg.max_inflight + 10
                    self.connected = True
                    self.last_error = None
                    backoff.reset()
                    log.info("event=mqtt_connected host=%s port=%d protocol=%s tls=%s", cfg.host,
                             cfg.effective_port, cfg.protocol, tls is not None)
                    await client.publish(self.status_topic, self._status("online"), qos=1, retain=True,
                                         timeout=cfg.timeout)
                    async with asyncio.TaskGroup() as tg:
                        self._start_lanes(client, tg)
                        if self.command_topics and self.on_command:
                            tg.create_task(self._listen(client), name="mqtt-commands")
            except* (aiomqtt.MqttError, OSError, ssl.SSLError) as group:
                handshake = tls is not None and not self.connected
                self.connected = False
                self.connect_failures += 1
                delay = backoff.next()
                error = describe_error(group.exceptions[0], tls_handshake=handshake)
                level = logging.ERROR if "TLS" in error or "credentials" in error else logging.WARNING
                if error != self.last_error or level == logging.WARNING:
                    log.log(level, "event=mqtt_disconnected host=%s port=%d error=%r retry_in=%.1fs",
                            cfg.host, cfg.effective_port, error, delay)
                self.last_error = error
                await asyncio.sleep(delay)

    def _session_args(self) -> dict:
        if self.v5:  # MQTT 5 has clean_start instead of clean_session
            return {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": True}
        return {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": True}

    def _status(self, state: str) -> bytes:
        return json.dumps({"status": state, "client_id": self.client_id, "version": __version__,
                           "started": self.started}).encode()

    def _start_lanes(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        live_from = self.buffer.last_seq + 1  # stored from now on: live; before: backlog
        sem = asyncio.Semaphore(self.cfg.max_inflight)
        tg.create_task(self._lane(client, sem, after=0, before=live_from), name="mqtt-backlog")
        tg.create_task(self._lane(client, sem, after=live_from - 1, before=None), name="mqtt-live")

    async def _publish(self, client: aiomqtt.Client, sem: asyncio.Semaphore, row: Row) -> None:
        cfg = self.cfg
        payload, props = row.payload, None
        historical = is_historical(row, cfg.historical_after, now())
        if historical:
            payload = mark_historical(payload)
            if self.v5:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("historical", "true")]
        async with sem:
            try:
                await client.publish(row.topic, payload, qos=1, properties=props, timeout=cfg.timeout)
            except aiomqtt.MqttError as e:
                if "timed out" in str(e):
                    self.publish_timeouts += 1
                raise
            if row.type == "state" and row.seq > self._retained_state_seq.get(row.topic, 0):
                # a replayed old state must not overwrite a newer retained one
                self._retained_state_seq[row.topic] = row.seq
                await client.publish(state_topic(row.topic), payload, qos=1, retain=True, timeout=cfg.timeout)
        if historical:
            self.historical_sent += 1

    async def _lane(self, client: aiomqtt.Client, sem: asyncio.Semaphore, *, after: int, before: int | None) -> None:
        """Send rows after `after` (and before `before`: the backlog lane ends when it is drained)."""
        backlog = before is not None
        limit = min(self.cfg.batch_size, self._bucket.burst) if backlog else self.cfg.batch_size
        sent = after
        while True:
            if not backlog:
                self.wake.clear()
            rows = await self.buffer.read(self.name, limit, after=sent, before=before)
            if not rows:
                if backlog:
                    return
                try:
                    async with asyncio.timeout(1.0):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                continue
            if backlog:
                await self._bucket.take(len(rows))
            results = await asyncio.gather(*(self._publish(client, sem, r) for r in rows), return_exceptions=True)
            acked = [r.seq for r, res in zip(rows, results) if res is None]
            if acked:
                await self.buffer.ack_rows(self.name, acked)
                self.delivered += len(acked)
                self.last_delivery = now()
            failure = next((res for res in results if isinstance(res, BaseException)), None)
            if failure is not None:
                if isinstance(failure, aiomqtt.MqttError):
                    raise failure
                raise aiomqtt.MqttError(f"publish failed: {failure!r}") from failure
            sent = rows[-1].seq

    async def _listen(self, client: aiomqtt.Client) -> None:
        for topic in self.command_topics:
            await client.subscribe(topic, qos=1, timeout=self.cfg.timeout)
        async for message in client.messages:
            try:
                await self.on_command(str(message.topic), bytes(message.payload))
            except ValueError as e:
                log.warning("event=command_rejected topic=%s error=%r", message.topic, str(e))
