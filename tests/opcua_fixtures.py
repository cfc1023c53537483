"""Real asyncua servers on 127.0.0.1 for the OPC UA tests (no mocks of the server).

`UaTestServer` builds a server with chosen namespaces and variables, optional security
(certificate, username/password, a trust list for client certificates), and can be
stopped and restarted on the same port with a different namespace order. `sessions()`
counts the live sessions the server holds, which is how the tests prove that the agent
never leaks one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_agent.config import OpcUaDevice

logging.getLogger("asyncua").setLevel(logging.ERROR)

NS_PRESS = "urn:acme:press"
NS_OTHER = "urn:acme:other"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path, name: str, uri: str, server: bool = False) -> tuple[Path, Path]:
    """A throwaway self-signed certificate (DER) and key (PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())],
        extended=usage, days=30)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class Users:
    """Username/password check on the server; counts activation attempts (to spot retry storms)."""

    def __init__(self, accounts: dict[str, str], certificates: set[bytes] | None = None):
        self.accounts = accounts
        self.certificates = certificates if certificates is not None else set()  # DER of accepted user certificates
        self.attempts = 0

    def get_user(self, iserver, username=None, password=None, certificate=None):
        self.attempts += 1
        if username is not None and self.accounts.get(username) == password:
            return User(role=UserRole.User, name=username)
        if certificate is not None and bytes(certificate) in self.certificates:
            return User(role=UserRole.User, name="x509")
        return None


@dataclass
class Var:
    """A variable to create: node id string with `{ns}` for the press namespace index."""

    ident: str  # string identifier in the press namespace
    data_type: str
    value: object
    status: str | None = None  # e.g. "UncertainLastUsableValue", "BadSensorFailure"


@dataclass
class UaTestServer:
    port: int = field(default_factory=free_port)
    namespaces: list[str] = field(default_factory=lambda: [NS_PRESS])
    variables: list[Var] = field(default_factory=list)
    certificate: tuple[Path, Path] | None = None
    policies: list | None = None
    users: Users | None = None
    trusted_clients: set[bytes] | None = None  # DER of trusted client certificates (None = trust all)
    max_nodes_per_read: int | None = None
    decoys: bool = False  # the same identifiers in every other namespace, with value 999999
    server: Server | None = None
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)
    reads: int = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/test"

    async def start(self) -> None:
        server = Server(user_manager=self.users) if self.users else Server()
        await server.init()
        server.set_endpoint(self.url)
        server.socket_address = ("127.0.0.1", self.port)
        server.disable_clock()
        if self.certificate:
            await server.load_certificate(str(self.certificate[0]))
            await server.load_private_key(str(self.certificate[1]))
        if self.policies is not None:
            server.set_security_policy(self.policies)
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
        if self.trusted_clients is not None:
            trusted = self.trusted_clients

            async def validate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
                if cert.public_bytes(Encoding.DER) not in trusted:
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

            server.set_certificate_validator(validate)
        for uri in self.namespaces:
            await server.register_namespace(uri)
        ns = (await server.get_namespace_array()).index(NS_PRESS)
        folder = await server.nodes.objects.add_folder(ua.NodeId("Press", ns), f"{ns}:Press")
        self.nodes = {}
        for v in self.variables:
            vt = ua.VariantType[v.data_type]
            node = await folder.add_variable(ua.NodeId(v.ident, ns), f"{ns}:{v.ident.rsplit('.', 1)[-1]}",
                                             ua.Variant(v.value, vt))
            self.nodes[v.ident] = node.nodeid
            if v.status:
                await server.write_attribute_value(
                    node.nodeid, ua.DataValue(ua.Variant(v.value, vt), StatusCode=ua.StatusCode(getattr(ua.StatusCodes, v.status))))
        if self.decoys:
            for uri in self.namespaces:
                if uri == NS_PRESS:
                    continue
                idx = (await server.get_namespace_array()).index(uri)
                other = await server.nodes.objects.add_folder(ua.NodeId("Decoys", idx), f"{idx}:Decoys")
                for v in self.variables:
                    if v.data_type in ("UInt32", "Int32", "Double"):
                        await other.add_variable(ua.NodeId(v.ident, idx), f"{idx}:{v.ident}",
                                                 ua.Variant(999999, ua.VariantType[v.data_type]))
        if self.max_nodes_per_read is not None:
            limit = server.get_node(ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
            await limit.write_value(ua.Variant(self.max_nodes_per_read, ua.VariantType.UInt32))
        await server.start()
        self._count_reads(server)
        self.server = server

    def _count_reads(self, server: Server) -> None:
        """Count Read service calls from clients (instrumentation only: the real read still runs)."""
        original = server.iserver.create_session

        def create_session(*args, **kwargs):
            session = original(*args, **kwargs)
            real_read = session.read

            async def read(params):
                self.reads += 1
                return await real_read(params)

            session.read = read
            return session

        server.iserver.create_session = create_session

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self, namespaces: list[str] | None = None) -> None:
        await self.stop()
        if namespaces is not None:
            self.namespaces = namespaces
        await self.start()

    async def set(self, ident: str, value: object) -> None:
        var = next(v for v in self.variables if v.ident == ident)
        var.value = value
        await self.server.write_attribute_value(self.nodes[ident], ua.DataValue(ua.Variant(value, ua.VariantType[var.data_type])))

    def sessions(self) -> int:
        """Live client sessions the server holds (including ones kept after a lost connection)."""
        if self.server is None:
            return 0
        return sum(1 for s in self.server.iserver._external_sessions.values() if s.state.name != "Closed")

    def drop_connections(self) -> int:
        """Cut every client TCP connection from the server side (a network glitch)."""
        transports = list(self.server.iserver.asyncio_transports)
        for t in transports:
            t.abort()
        return len(transports)


def device(url: str, **overrides) -> OpcUaDevice:
    return OpcUaDevice.model_validate({"name": "ua", "protocol": "opcua", "url": url, "timeout": 1.0,
                                       "poll_interval": 0.1, **overrides})


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


class Blackhole:
    """A TCP proxy on 127.0.0.1 that can silently stop forwarding (a pulled cable: no FIN, no RST)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.blocked = False
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.blocked:
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, OSError):
                pass
            if not self.blocked:  # a pulled cable does not tell the other side
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
