"""Helpers for the delivery and chaos tests: a throwaway PKI, an HTTPS server, a simulator, checks.

Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import aiomqtt
import yaml
from conftest import FrozenClock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.config import parse_config
from edge_agent.simulator import Simulation, serve

# ---------------------------------------------------------------- PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, *objs) -> Path:
    data = b""
    for o in objs:
        if isinstance(o, x509.Certificate):
            data += o.public_bytes(serialization.Encoding.PEM)
        else:
            data += o.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    path.write_bytes(data)
    return path


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing we use: trusting it must fail


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False, server: bool = False):
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("edge-agent test CA", ca_key, _name("edge-agent test CA"), ca_key, ca=True)
    other = cert("some other CA", other_key, _name("some other CA"), other_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    srv = cert("127.0.0.1", srv_key, ca.subject, ca_key, server=True)
    cli = cert("line3-agent", cli_key, ca.subject, ca_key)
    return Pki(ca=_write(directory / "ca.pem", ca), server_cert=_write(directory / "server.pem", srv),
               server_key=_write(directory / "server.key", srv_key), client_cert=_write(directory / "client.pem", cli),
               client_key=_write(directory / "client.key", cli_key), other_ca=_write(directory / "other-ca.pem", other))


def mosquitto_tls_listener(port: int, pki: Pki, *, require_certificate: bool) -> str:
    """Extra mosquitto.conf lines: a TLS listener next to the plain one (which the Collector uses).

    As root mosquitto drops to the `mosquitto` user, which cannot read pytest's tmp dir: stay root.
    """
    return (("user root\n" if os.geteuid() == 0 else "") + f"listener {port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n")


# ---------------------------------------------------------------- HTTPS server


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    events: list[dict]
    status: int
    client_cert: dict | None
    at: float = 0.0  # time.monotonic() on arrival


@dataclass
class HttpsServer:
    """A real HTTPS server (http.server + ssl) on a thread; `respond(events, n)` decides each status."""

    pki: Pki
    require_client_cert: bool = False
    token: str | None = None
    respond: Callable[[list[dict], int], int] = lambda events, n: 200
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        if self.require_client_cert:
            ctx.load_verify_locations(self.pki.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                events = json.loads(body)
                if outer.token and self.headers.get("Authorization") != f"Bearer {outer.token}":
                    status = 401
                else:
                    status = outer.respond(events, len(outer.requests))
                outer.requests.append(Request(self.path, dict(self.headers), events, status,
                                              self.connection.getpeercert(), time.monotonic()))
                reply = json.dumps({"ok": status < 300}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/events"

    def accepted(self) -> list[dict]:
        return [e for r in self.requests if r.status < 300 for e in r.events]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# ---------------------------------------------------------------- simulator and checks


async def start_simulator(cfg: dict, clock: FrozenClock, cycle_time: float = 0.05):
    parsed = parse_config(yaml.safe_dump(cfg))
    sim = Simulation(parsed, clock=clock)
    machine = sim.machines["m1"]
    machine.cycle_time, machine.stop_probability, machine.stop_duration = cycle_time, 0.05, (0.2, 0.5)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(parsed, sim, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
    return machine, task


def unique(events: list[dict]) -> list[dict]:
    """First copy of each event_id; a duplicate must be the same event (it may differ in `historical` only)."""
    first: dict[str, dict] = {}
    for e in events:
        seen = first.setdefault(e["event_id"], e)
        strip = lambda x: {k: v for k, v in x.items() if k != "historical"}
        assert strip(seen) == strip(e), f"event_id {e['event_id']} arrived with different content"
    return list(first.values())


def check_complete(events: list[dict], produced: int, *, allow_gaps: bool = False) -> list[dict]:
    """Every part counted once after de-duplication; seq gap-free (or named in a gap event)."""
    uniq = unique(events)
    seqs = sorted(e["seq"] for e in uniq)
    assert len(seqs) == len(set(seqs)), "two different events with one seq"
    if not allow_gaps:
        assert seqs == list(range(1, len(seqs) + 1)), f"seq must be gap-free: missing {set(range(1, seqs[-1] + 1)) - set(seqs)}"
        assert sum(e["count"] for e in uniq if e["type"] == "count") == produced
    return uniq


class PropsCollector:
    """Subscribes with MQTT 5 and keeps (topic, payload, user properties, retain)."""

    def __init__(self, port: int, topic: str = "#"):
        self.port, self.topic = port, topic
        self.messages: list[tuple[str, dict | bytes, dict, bool]] = []
        self.arrived: list[float] = []  # time.monotonic() of each message
        self.subscribed = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"props-{id(self)}", timeout=5,
                                          protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                                          properties=_session_expiry()) as c:
                    await c.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for m in c.messages:
                        raw = bytes(m.payload)
                        try:
                            payload = json.loads(raw)
                        except ValueError:
                            payload = raw
                        props = dict(getattr(m.properties, "UserProperty", []) or []) if m.properties else {}
                        self.messages.append((str(m.topic), payload, props, m.retain))
                        self.arrived.append(time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def events(self) -> list[dict]:
        return [p for t, p, _, _ in self.messages if "/event/" in t and isinstance(p, dict)]


def _session_expiry():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 3600
    return p
