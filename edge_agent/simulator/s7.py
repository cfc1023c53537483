"""Siemens S7 frontend of the simulator (python-snap7 server on the device's host:port).

python-snap7's `Server` runs on its own threads and serves the bytearrays registered
with `register_area` by reference: writes into those bytearrays are what clients read.
`S7Frontend` registers one bytearray per DB (and M, I, Q) that the tags use, sized to
the highest tag, and refills them from the simulation before every read job, so every
read sees the machine as it is at that instant. The refill runs on the event loop (the
simulation is not thread-safe); the server thread waits for it, at most one second.

`S7Server` is the snap7 server with what tests and technicians need on top:
- `read_jobs` / `read_items` count read requests (PDUs) and the variables in them, as
  they arrive, to compare with the read planner;
- `set_cpu_status(4)` (STOP) / `(8)` (RUN) is reported through SZL 0x0424, as a real CPU does;
- `pdu_limit` caps the PDU size it grants (240 like an S7-1200, 480 by default);
- `stop()` also drops the connected clients, like a PLC that is switched off.
These hook into the server's internal methods (`_process_request`, `_get_szl_data`,
`_handle_setup_communication`, `_handle_client`) of python-snap7 3.3 (pinned <3.4).

Tests steer a frontend with `values[tag name] = value` (overrides the simulation) and
`server.unregister_area(...)` (a DB that is missing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import snap7
from snap7.datatypes import S7Area
from snap7.server import CPUState
from snap7.type import SrvArea

from drivers.s7.address import S7Address, encode, parse

log = logging.getLogger("edge_agent.simulator.s7")

SRV_AREAS = {"I": SrvArea.PE, "Q": SrvArea.PA, "M": SrvArea.MK, "DB": SrvArea.DB}
WIRE_AREAS = {"I": S7Area.PE, "Q": S7Area.PA, "M": S7Area.MK, "DB": S7Area.DB}  # keys of Server.memory_areas
_JOB, _READ = 0x01, 0x04


class S7Server(snap7.server.Server):
    def __init__(self, *, pdu_limit: int = 480, before_read: Callable[[], None] | None = None):
        super().__init__(log=False)
        self.pdu_limit = pdu_limit
        self.before_read = before_read
        self.read_jobs = 0  # read request PDUs received
        self.read_items = 0  # variables in them
        self._counter_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()

    @property
    def bound_port(self) -> int:
        assert self.server_socket is not None, "server not started"
        return self.server_socket.getsockname()[1]

    # -- hooks into snap7.server.Server (python-snap7 3.3)

    def _process_request(self, request_data: bytes, client_address: tuple[str, int]) -> bytes | None:
        # S7 job header: 0x32, type, reserved(2), sequence(2), param length(2), data length(2); then function, items
        if len(request_data) >= 12 and request_data[0] == 0x32 and request_data[1] == _JOB and request_data[10] == _READ:
            with self._counter_lock:
                self.read_jobs += 1
                self.read_items += request_data[11]
            if self.before_read is not None:
                self.before_read()
        return super()._process_request(request_data, client_address)

    def _handle_setup_communication(self, request: dict[str, Any]) -> bytes:
        response = bytearray(super()._handle_setup_communication(request))
        granted = struct.unpack(">H", response[-2:])[0]
        response[-2:] = struct.pack(">H", min(granted, self.pdu_limit))
        return bytes(response)

    def _get_szl_data(self, szl_id: int, szl_index: int) -> bytes | None:
        if szl_id == 0x0424:
            # one 20-byte record: event id (2), ae (1), mode (1: 0x08 RUN, 0x04 STOP), reserved ...
            mode = {CPUState.RUN: 0x08, CPUState.STOP: 0x04}.get(self.cpu_state, 0x00)
            return struct.pack(">HH", 20, 1) + bytes([0x43, 0x02, 0xFF, mode]) + bytes(16)
        return super()._get_szl_data(szl_id, szl_index)

    def _handle_client(self, client_socket: socket.socket, address: tuple[str, int]) -> None:
        with self._sockets_lock:
            self._sockets.add(client_socket)
        try:
            super()._handle_client(client_socket, address)
        finally:
            with self._sockets_lock:
                self._sockets.discard(client_socket)

    def stop(self) -> int:
        with self._sockets_lock:
            sockets = list(self._sockets)
        for s in sockets:  # wake the client threads blocked in recv; they close their sockets
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError as e:
                log.debug("event=s7_sim_shutdown_client error=%r", str(e))
        return super().stop()


class S7Frontend:
    def __init__(self, device, tags, sim):
        self.device, self.tags, self.sim = device, list(tags), sim
        self.addresses: dict[str, S7Address] = {t.name: parse(t.address, t.type) for t in self.tags}
        self.values: dict[str, object] = {}  # tag name -> value overriding the simulation
        self.areas: dict[tuple[str, int], bytearray] = {}
        for addr in self.addresses.values():
            key = (addr.area, addr.db)
            size = max(len(self.areas.get(key, b"")), addr.end)
            self.areas[key] = bytearray(size)
        self.server: S7Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def requests(self) -> int:
        """Read request PDUs served so far."""
        return self.server.read_jobs if self.server else 0

    def fill(self) -> None:
        """Write the current simulated value of every tag into the served memory."""
        values = self.sim.tag_values(self.tags)
        values.update(self.values)
        locks = self.server.area_locks if self.server else {}
        for tag in self.tags:
            addr = self.addresses[tag.name]
            memory = self.areas[(addr.area, addr.db)]
            lock = locks.get((WIRE_AREAS[addr.area], addr.db))
            current = bytes(memory[addr.start:addr.start + 1])
            data = encode(values[tag.name], addr, current)
            if lock is not None:
                with lock:
                    memory[addr.start:addr.start + len(data)] = data
            else:
                memory[addr.start:addr.start + len(data)] = data

    def _fill_from_server_thread(self) -> None:
        loop = self._loop
        if loop is None:
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                self.fill()
            except Exception as e:  # noqa: BLE001 -- reported to the waiting server thread
                done.set_exception(e)
            else:
                done.set_result(None)

        try:
            loop.call_soon_threadsafe(run)
            done.result(timeout=1.0)
        except RuntimeError as e:  # the event loop is closed: serve what is there
            log.debug("event=s7_sim_fill_skipped error=%r", str(e))
        except concurrent.futures.TimeoutError:
            done.cancel()
            log.warning("event=s7_sim_fill_timeout device=%s", self.device.name)
        except Exception:  # noqa: BLE001 -- a bad simulated value must not kill the server thread
            log.exception("event=s7_sim_fill_failed device=%s", self.device.name)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        host = await asyncio.to_thread(socket.gethostbyname, self.device.host)
        _check_port_free(host, self.device.port)
        server = S7Server(before_read=self._fill_from_server_thread)
        for (area, db), memory in self.areas.items():
            server.register_area(SRV_AREAS[area], db, memory)
        self.server = server
        self.fill()
        await asyncio.to_thread(server.start_to, host, self.device.port)

    async def stop(self) -> None:
        if self.server is not None:
            # stop() joins the server's threads, which may be waiting for a fill on this loop
            await asyncio.to_thread(self.server.stop)
            self.server = None


def _check_port_free(host: str, port: int) -> None:
    """snap7's server binds with SO_REUSEPORT, so a second simulator would silently share the port."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from a restart is fine
        probe.bind((host, port))
    except OSError as e:
        raise OSError(e.errno, f"cannot serve S7 on {host}:{port}: {e.strerror} (another simulator or PLC?)") from None
    finally:
        probe.close()
