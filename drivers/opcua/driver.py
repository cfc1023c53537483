"""OPC UA driver on asyncua's client: polling (chunked Read) or subscriptions (monitored items).

Lifecycle (the sampler owns reconnects and backoff):

    connect()   endpoint + certificate checks, session, namespace URIs -> indexes, MaxNodesPerRead
    read()      one Read per chunk of MaxNodesPerRead nodes -> Samples (poll mode)
    subscribe() monitored items; delivers changes until the session dies, then raises ConnectionLost
    close()     CloseSession (deleting subscriptions) and socket, bounded by timeouts

asyncua's own auto-reconnect stays off: it would re-create monitored items with the
namespace indexes of the old server, and a restarted server may have reordered them.
A session lost with live subscriptions is kept by the server for `session_timeout`
(for transfer); the next connect() reclaims and closes it, so the server never holds
more than one session of ours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif

from drivers.base import Health
from drivers.opcua import security
from drivers.opcua.address import NodeAddress, OpcUaAddress, parse
from drivers.opcua.values import quality_of, to_sample
from edge_agent.config import OpcUaDevice, Tag
from edge_agent.errors import ConnectionLost, DeviceRejected
from edge_agent.model import Quality, Sample, now

log = logging.getLogger("drivers.opcua")

NAMESPACE_ARRAY = ua.NodeId(ua.ObjectIds.Server_NamespaceArray)
MAX_NODES_PER_READ = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
_KINDS = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String, "g": ua.NodeIdType.Guid, "b": ua.NodeIdType.ByteString}
# service results that mean the session (not one node) is gone
_SESSION_DEAD = ("BadSessionIdInvalid", "BadSessionClosed", "BadSessionNotActivated", "BadSecureChannelIdInvalid",
                 "BadSecureChannelClosed", "BadConnectionClosed", "BadServerHalted", "BadShutdown",
                 "BadCommunicationError", "BadTimeout", "BadNoCommunication")
_NETWORK_ERRORS = (OSError, ConnectionError, TimeoutError, ua.UaError, asyncio.IncompleteReadError)

ANALOG = ("Float", "Double")  # the deadband applies to these only: integers are counters and codes
Deliver = Callable[[list[Sample]], Awaitable[Any]]


def describe(e: BaseException) -> str:
    name = security.status_name(e)
    if name:
        return name
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def resolve(node: NodeAddress, namespaces: list[str]) -> ua.NodeId:
    """NodeAddress -> asyncua NodeId with the server's current index for a namespace URI (KeyError if absent)."""
    if node.namespace_uri is not None:
        index = namespaces.index(node.namespace_uri) if node.namespace_uri in namespaces else None
        if index is None:
            raise KeyError(node.namespace_uri)
    else:
        index = node.namespace_index or 0
    return ua.NodeId(node.identifier, index, _KINDS[node.kind])


def chunks(items: list, size: int | None) -> list[list]:
    if not size or size <= 0:
        return [items] if items else []
    return [items[i:i + size] for i in range(0, len(items), size)]


def _first_cert(der: bytes) -> bytes:
    """The leading certificate of a DER blob that may carry a chain (length from the outer SEQUENCE)."""
    if len(der) > 4 and der[1] == 0x82:
        return der[:int.from_bytes(der[2:4], "big") + 4]
    return der


class _Handler:
    """asyncua subscription callbacks: push to a queue, never block the publish loop."""

    def __init__(self, queue: asyncio.Queue, on_status: Callable[[str], None]):
        self.queue, self.on_status = queue, on_status

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        item = data.monitored_item
        self.queue.put_nowait((item.ClientHandle, item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.on_status(status.Status.name)


class OpcUaDriver:
    def __init__(self, device: OpcUaDevice, tags: Sequence[Tag], *, pki_dir: Path | None = None):
        self.device = device
        self.tags = list(tags)
        self.health = Health()
        self.addresses: dict[str, OpcUaAddress] = {t.name: parse(t.address, t.type, device) for t in self.tags}
        self.pki_dir = security.resolve_pki_dir(device, pki_dir)
        self.identity: security.Identity | None = None
        self.namespaces: list[str] = []
        self.max_nodes_per_read: int | None = None
        self._by_name = {t.name: t for t in self.tags}
        self._client: Client | None = None
        self._nodes: dict[str, ua.NodeId] = {}  # tag -> resolved node id
        self._unresolved: dict[str, str] = {}  # tag -> why it cannot be read
        self._check_namespaces = any(a.node.namespace_uri for a in self.addresses.values())
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._subscribed = False
        self._orphan: tuple[ua.NodeId, bytes | None] | None = None  # a session lost with live subscriptions
        self.sessions_reclaimed = 0

    # ------------------------------------------------------------ connect / close

    async def connect(self) -> None:
        d = self.device
        if self._client is not None:
            await self.close()
        self._lost = asyncio.Event()
        self._lost_reason, self._subscribed = "", False
        try:
            # asyncua's connect() can hang forever on a half-open peer (#1660): one budget over all steps
            async with asyncio.timeout(d.timeout * 6):
                await self._connect()
        except DeviceRejected:
            await self._abort()
            raise
        except (*_NETWORK_ERRORS, asyncio.CancelledError) as e:
            await self._abort()
            if isinstance(e, asyncio.CancelledError):
                raise
            if security.is_rejection(e):
                raise security.rejection(d, e, self.identity) from None
            if isinstance(e, ua.UaError) and str(e).startswith("No matching endpoints"):
                raise DeviceRejected(d.name, f"server {d.url} offers no endpoint with security "
                                             f"{d.security_policy}/{d.effective_security_mode}") from None
            raise ConnectionLost(d.name, f"cannot connect to {d.url}: {describe(e)}") from None
        except Exception as e:  # anything else asyncua or cryptography raises: wrapped here, once, at the edge
            await self._abort()
            log.debug("event=opcua_connect_error device=%s", d.name, exc_info=True)
            raise ConnectionLost(d.name, f"cannot connect to {d.url}: {type(e).__name__}: {e}") from None
        self.health.connected, self.health.last_error = True, None
        log.info("event=opcua_connected device=%s url=%s policy=%s mode=%s namespaces=%d max_nodes_per_read=%s",
                 d.name, d.url, d.security_policy, d.effective_security_mode, len(self.namespaces),
                 self.max_nodes_per_read)

    async def _connect(self) -> None:
        d = self.device
        server_der: bytes | None = None
        if d.security_policy != "None":
            self.identity = await security.own_identity(d, self.pki_dir)
            server_der = await self._server_certificate()
            await security.check_server_certificate(d, self.pki_dir, server_der)
        if self._orphan is not None:
            await self._reclaim(server_der)
        client = await self._make_client(server_der)
        self._client = client
        await client.connect()
        await self._after_connect(client)

    async def _server_certificate(self) -> bytes:
        """The certificate of the endpoint matching our policy and mode (GetEndpoints on an open channel)."""
        d = self.device
        probe = Client(d.url, timeout=d.timeout)
        endpoints = await probe.connect_and_get_server_endpoints()
        policy_uri = security.POLICIES[d.security_policy].URI
        mode = security.MODES[d.effective_security_mode]
        for ep in endpoints:
            if ep.SecurityPolicyUri == policy_uri and ep.SecurityMode == mode and ep.ServerCertificate:
                return _first_cert(ep.ServerCertificate)
        offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name.rstrip('_')}"
                          for ep in endpoints})
        raise DeviceRejected(d.name, f"server {d.url} offers no endpoint with {d.security_policy}/"
                                     f"{d.effective_security_mode}; it offers {', '.join(offered)}")

    async def _make_client(self, server_der: bytes | None) -> Client:
        try:
            return await self._build_client(server_der)
        except (OSError, ValueError, TypeError) as e:  # unreadable or malformed certificate/key files
            raise DeviceRejected(self.device.name, f"cannot load a certificate or key: {e}") from None

    async def _build_client(self, server_der: bytes | None) -> Client:
        d = self.device
        client = Client(d.url, timeout=d.timeout, watchdog_intervall=d.keepalive)
        client.name = client.description = f"edge-agent {d.name}"
        client.application_uri = self.identity.application_uri if self.identity else security.default_application_uri()
        client.product_uri = "urn:edge-agent"
        client.session_timeout = int(d.session_timeout * 1000)
        client.connection_lost_callback = self._on_connection_lost
        if self.identity is not None:
            await client.set_security(
                security.POLICIES[d.security_policy], str(self.identity.certificate), str(self.identity.private_key),
                server_certificate=server_der, mode=security.MODES[d.effective_security_mode],
            )
        if d.username is not None and d.password is not None:
            client.set_user(d.username)
            client.set_password(d.password.get_secret_value())
        if d.user_certificate is not None and d.user_private_key is not None:
            await client.load_client_certificate(str(d.user_certificate))
            await client.load_private_key(d.user_private_key)
        return client

    async def _after_connect(self, client: Client) -> None:
        """Namespace URIs -> indexes (they may differ after a server restart) and the server's read limit."""
        values = await client.uaclient.read_attributes([NAMESPACE_ARRAY, MAX_NODES_PER_READ], ua.AttributeIds.Value)
        self.health.requests += 1
        ns_dv, limit_dv = values
        ns_dv.StatusCode.check()
        self.namespaces = list(ns_dv.Value.Value or [])
        limit = limit_dv.Value.Value if limit_dv.StatusCode.is_good() and limit_dv.Value else 0
        limits = [x for x in (limit, self.device.max_nodes_per_read) if x]
        self.max_nodes_per_read = min(limits) if limits else None
        self._nodes, self._unresolved = {}, {}
        for name, addr in self.addresses.items():
            try:
                self._nodes[name] = resolve(addr.node, self.namespaces)
            except KeyError:
                self._unresolved[name] = f"namespace {addr.node.namespace_uri} not on the server"
        if self._unresolved:
            log.warning("event=opcua_namespace_missing device=%s tags=%s", self.device.name, sorted(self._unresolved))

    async def _reclaim(self, server_der: bytes | None) -> None:
        """Close the session a lost connection left on the server (it outlives the socket while it has subscriptions)."""
        token, nonce = self._orphan  # type: ignore[misc]
        client = await self._make_client(server_der)
        client.connection_lost_callback = None
        try:
            await client.connect_socket()
            try:
                await client.send_hello()
                await client.open_secure_channel()
                client.uaclient.session.restore_authentication_token(token)
                client._server_nonce = nonce  # the ActivateSession signature covers the server's last nonce
                await client.activate_session(username=client._username, password=client._password,
                                              certificate=client.user_certificate)
                await client.uaclient.close_session(True)
                self.sessions_reclaimed += 1
                log.info("event=opcua_session_reclaimed device=%s", self.device.name)
            except ua.UaStatusCodeError as e:  # BadSessionIdInvalid: the server already dropped it
                log.debug("event=opcua_session_gone device=%s status=%s", self.device.name, describe(e))
            finally:
                await self._quiet(client.uaclient.close_secure_channel())
            self._orphan = None  # settled; a network error above keeps it for the next attempt
        finally:
            client.disconnect_socket()

    async def _on_connection_lost(self, exc: Exception) -> None:
        """asyncua's watchdog (keep-alive read of ServerStatus, socket state) declared the connection dead."""
        self._mark_lost(f"session lost: {describe(exc)}")

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    async def close(self) -> None:
        client, self._client = self._client, None
        self.health.connected = False
        if client is None:
            return
        live = client.uaclient.state is UaClientState.CONNECTED and not self._lost.is_set()
        token = client.uaclient.session.authentication_token
        nonce = client._server_nonce
        closed = False
        try:
            if live:
                try:
                    async with asyncio.timeout(max(self.device.timeout / 2, 0.2)):
                        await client.close_session()  # stops asyncua's watchdog tasks, deletes our subscriptions
                    closed = True
                except (*_NETWORK_ERRORS,) as e:
                    log.debug("event=opcua_close_session_failed device=%s error=%s", self.device.name, describe(e))
            if not closed:
                await self._quiet(client.close_session())  # transport gone: only stops the background tasks
            await self._quiet(client.close_secure_channel())
        finally:
            client.disconnect_socket()
            if not closed and self._subscribed and not token.is_null():
                self._orphan = (token, nonce)

    async def _abort(self) -> None:
        try:
            await self.close()
        except Exception as e:  # noqa: BLE001 -- never mask the connect error with a cleanup error
            log.debug("event=opcua_abort_failed device=%s error=%s", self.device.name, describe(e))

    async def _quiet(self, aw: Awaitable[Any]) -> None:
        try:
            async with asyncio.timeout(max(self.device.timeout / 2, 0.2)):
                await aw
        except (*_NETWORK_ERRORS, RuntimeError) as e:
            log.debug("event=opcua_cleanup_error device=%s error=%s", self.device.name, describe(e))

    def _require(self) -> Client:
        client = self._client
        if client is None:
            raise ConnectionLost(self.device.name, "not connected")
        if self._lost.is_set():
            raise ConnectionLost(self.device.name, self._lost_reason)
        if client.uaclient.state is not UaClientState.CONNECTED:
            raise ConnectionLost(self.device.name, "connection closed")
        return client

    # ------------------------------------------------------------ polling

    async def read(self) -> list[Sample]:
        client = self._require()
        names = list(self._nodes)
        samples = [Sample(n, None, now(), Quality.BAD, why) for n, why in self._unresolved.items()]
        limit = self.max_nodes_per_read
        pending = [(n, self._nodes[n]) for n in names]
        if self._check_namespaces:
            pending.insert(0, ("", NAMESPACE_ARRAY))  # a changed namespace table means our indexes are stale
        while pending:
            batch, pending = (pending[:limit], pending[limit:]) if limit else (pending, [])
            try:
                values = await self._read(client, [node for _, node in batch])
            except ua.UaStatusCodeError as e:
                if describe(e) == "BadTooManyOperations" and len(batch) > 1:
                    limit = max(1, len(batch) // 2)  # the server's advertised limit was wrong: split and retry
                    self.max_nodes_per_read = limit
                    pending = batch + pending
                    continue
                raise ConnectionLost(self.device.name, f"Read failed: {describe(e)}") from None
            ts = now()
            for (name, _), dv in zip(batch, values, strict=False):
                if not name:
                    self._check_namespace_table(dv)
                    continue
                samples.append(to_sample(self._by_name[name], self.addresses[name], dv, ts))
        self.health.reads += 1
        self.health.last_ok = now()
        return samples

    async def _read(self, client: Client, nodes: list[ua.NodeId]) -> list[ua.DataValue]:
        self.health.requests += 1
        try:
            async with asyncio.timeout(self.device.timeout):
                values = await client.uaclient.read_attributes(nodes, ua.AttributeIds.Value)
        except ua.UaStatusCodeError as e:
            if describe(e) in _SESSION_DEAD:
                raise ConnectionLost(self.device.name, f"Read failed: {describe(e)}") from None
            raise
        except (OSError, ConnectionError, TimeoutError, ua.UaError) as e:
            raise ConnectionLost(self.device.name, f"Read failed: {describe(e)}") from None
        except Exception as e:  # a malformed response must not kill the device task
            log.debug("event=opcua_read_error device=%s", self.device.name, exc_info=True)
            raise ConnectionLost(self.device.name, f"Read failed: {type(e).__name__}: {e}") from None
        if len(values) != len(nodes):
            raise ConnectionLost(self.device.name, f"Read returned {len(values)} values for {len(nodes)} nodes")
        return values

    def _check_namespace_table(self, dv: ua.DataValue) -> None:
        current = list(dv.Value.Value or []) if dv.StatusCode.is_good() and dv.Value else None
        if current is not None and current != self.namespaces:
            raise ConnectionLost(self.device.name, "the server's namespace table changed; reconnecting to re-resolve")

    # ------------------------------------------------------------ subscriptions

    async def subscribe(self, deliver: Deliver) -> None:
        """Deliver samples as the server reports changes; raises ConnectionLost when the session dies."""
        if self.device.mode != "subscribe":
            await self._poll_forever(deliver)
            return
        d = self.device
        client = self._require()
        queue: asyncio.Queue = asyncio.Queue()
        handler = _Handler(queue, self._on_status)
        interval = (d.publishing_interval or d.poll_interval) * 1000
        sampling = (d.sampling_interval or d.poll_interval) * 1000
        keepalive_count = max(1, round(d.keepalive * 1000 / interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval, RequestedLifetimeCount=keepalive_count * 4,
            RequestedMaxKeepAliveCount=keepalive_count, MaxNotificationsPerPublish=0,
            PublishingEnabled=True, Priority=0,
        )
        names = list(self._nodes)
        try:
            async with asyncio.timeout(d.timeout * 2):
                sub = await client.create_subscription(params, handler)
                self._subscribed = True
                self.health.requests += 1
                results: list = []
                for batch in chunks(list(enumerate(names)), 1000):
                    results += await sub.create_monitored_items([self._item(i, n, sampling) for i, n in batch])
                    self.health.requests += 1
        except (OSError, ConnectionError, TimeoutError, ua.UaError) as e:
            raise ConnectionLost(d.name, f"cannot create the subscription: {describe(e)}") from None
        except Exception as e:
            log.debug("event=opcua_subscribe_error device=%s", d.name, exc_info=True)
            raise ConnectionLost(d.name, f"cannot create the subscription: {type(e).__name__}: {e}") from None
        ts = now()
        initial = [Sample(n, None, ts, Quality.BAD, why) for n, why in self._unresolved.items()]
        for name, result in zip(names, results, strict=False):
            if isinstance(result, ua.StatusCode):
                initial.append(Sample(name, None, ts, *quality_of(result)))
        if initial:
            await deliver(initial)
        log.info("event=opcua_subscribed device=%s items=%d failed=%d publishing_ms=%.0f sampling_ms=%.0f",
                 d.name, len(names), len(initial), interval, sampling)
        stale_after = 2 * d.keepalive + d.timeout
        started = time.monotonic()
        while True:
            if self._lost.is_set():
                raise ConnectionLost(d.name, self._lost_reason)
            last = sub.last_publish_at or started  # a server that never publishes is as dead as one that stopped
            if time.monotonic() - last > stale_after:
                raise ConnectionLost(d.name, f"no publish response or keep-alive for {stale_after:.0f}s")
            get = asyncio.ensure_future(queue.get())
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait({get, lost}, timeout=min(1.0, d.keepalive), return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
                if not get.done():
                    get.cancel()
            if not get.done() or get.cancelled():
                continue
            items = [get.result()]
            while not queue.empty():
                items.append(queue.get_nowait())
            ts = now()
            samples = []
            for handle, dv in items:
                name = names[handle] if 0 <= handle < len(names) else None
                if name is not None:
                    samples.append(to_sample(self._by_name[name], self.addresses[name], dv, ts))
            self.health.reads += 1
            self.health.last_ok = ts
            await deliver(samples)

    def _item(self, handle: int, name: str, sampling_ms: float) -> ua.MonitoredItemCreateRequest:
        d = self.device
        params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=sampling_ms, QueueSize=d.queue_size,
                                         DiscardOldest=True)
        if d.deadband > 0 and self.addresses[name].data_type in ANALOG:  # never deadband a counter
            params.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=ua.DeadbandType.Absolute if d.deadband_type == "absolute" else ua.DeadbandType.Percent,
                DeadbandValue=d.deadband,
            )
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=self._nodes[name], AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params,
        )

    def _on_status(self, status: str) -> None:
        if status.startswith("Bad"):  # BadTimeout (subscription expired), BadShutdown (connection lost) ...
            self._mark_lost(f"subscription status {status}")

    async def _poll_forever(self, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            await deliver(await self.read())
            deadline += self.device.poll_interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
