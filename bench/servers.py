"""Bench servers, each in its own process: `python -m bench.servers KIND '{json options}'`.

They speak JSON lines: `{"ready": true, ...}` once listening; then answer commands read
from stdin (`{"cmd": "stats"}`, `{"cmd": "quit"}`); unsolicited lines carry `"report": true`
(a value change with its wall-clock time, the first request seen).

- modbus: a minimal asyncio Modbus TCP server (FC 1-4) written for speed, so a
  comparison measures the client side, not pymodbus' server. Counts requests.
- s7: python-snap7's server (the simulator's `S7Server`, which counts read jobs).
- opcua: an asyncua server with N variables; counts Read requests and nodes read.

Layout of the machine signals (all kinds): machine k has a run bit (always true) and a
uint32 part counter. `counter`: "off"; "rate" (every counter +1 at `hz`); or "random"
(each counter changes at random, mean interval `mean_interval` s; every change is
reported with its time, for latency figures).
"""

from __future__ import annotations

import array
import asyncio
import json
import random
import struct
import sys
import threading
import time
from typing import Any


def emit(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


class Base:
    def __init__(self, opts: dict[str, Any]):
        self.opts = opts
        self.machines = int(opts.get("machines", 1))
        self.counters = [0] * self.machines
        self.requests = 0
        self.values = 0
        self.first_request_reported = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def seen_request(self, values: int = 0) -> None:
        self.requests += 1
        self.values += values
        if not self.first_request_reported:
            self.first_request_reported = True
            emit({"report": True, "first_request": time.time()})

    def set_counter(self, k: int, value: int) -> None:  # per kind
        raise NotImplementedError

    async def counter_task(self) -> None:
        mode = self.opts.get("counter", "off")
        if mode == "rate":
            period = 1.0 / float(self.opts.get("hz", 10))
            nxt = time.monotonic()
            while True:
                nxt += period
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                for k in range(self.machines):
                    self.counters[k] += 1
                    await self._set(k)
        elif mode == "random":
            mean = float(self.opts.get("mean_interval", 0.25))
            rng = random.Random(int(self.opts.get("seed", 1)))
            heap = [(time.monotonic() + rng.uniform(0, 2 * mean), k) for k in range(self.machines)]
            while True:
                heap.sort()
                at, k = heap.pop(0)
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                self.counters[k] += 1
                await self._set(k)
                emit({"report": True, "change": [k, self.counters[k]], "t": time.time()})
                heap.append((at + rng.uniform(0.6 * mean, 1.4 * mean), k))

    async def _set(self, k: int) -> None:
        r = self.set_counter(k, self.counters[k])
        if asyncio.iscoroutine(r):
            await r

    async def ramp_task(self) -> None:
        pass

    async def start(self) -> dict:
        raise NotImplementedError

    async def stop(self) -> None:
        pass

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        info = await self.start()
        commands: asyncio.Queue = asyncio.Queue()

        def stdin_reader() -> None:
            for line in sys.stdin:
                self.loop.call_soon_threadsafe(commands.put_nowait, line)
            self.loop.call_soon_threadsafe(commands.put_nowait, '{"cmd": "quit"}')

        threading.Thread(target=stdin_reader, daemon=True).start()
        tasks = [asyncio.create_task(self.counter_task()), asyncio.create_task(self.ramp_task())]
        emit({"ready": True, **info})
        try:
            while True:
                cmd = json.loads(await commands.get())
                if cmd["cmd"] == "quit":
                    break
                if cmd["cmd"] == "stats":
                    emit({"requests": self.requests, "values": self.values, "t": time.monotonic(),
                          "wall": time.time(), "counters": self.counters})
                elif cmd["cmd"] == "arm":  # report the next first request again
                    self.first_request_reported = False
                    emit({"ok": True})
                elif cmd["cmd"] == "set":  # {"cmd": "set", "machine": k, "value": v}
                    self.counters[cmd["machine"]] = cmd["value"]
                    await self._set(cmd["machine"])
                    emit({"ok": True, "t": time.time()})
                else:
                    emit({"error": f"unknown command {cmd['cmd']!r}"})
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop()


# ---------------------------------------------------------------- Modbus TCP

_BITS01 = bytes.maketrans(b"\x00\x01", b"01")


class ModbusServer(Base):
    """Machine k: coil:k (run), hr:2k..2k+1 (uint32 counter, high word first). Others: hr/ir ramp."""

    def __init__(self, opts: dict[str, Any]):
        super().__init__(opts)
        self.hr = array.array("H", bytes(2 * 65536))
        self.ir = array.array("H", bytes(2 * 65536))
        self.coils = bytearray(65536)
        self.di = bytearray(65536)
        for k in range(self.machines):
            self.coils[k] = 1
        self.server: asyncio.base_events.Server | None = None

    def set_counter(self, k: int, value: int) -> None:
        value &= 0xFFFFFFFF
        self.hr[2 * k], self.hr[2 * k + 1] = value >> 16, value & 0xFFFF

    async def ramp_task(self) -> None:
        n = int(self.opts.get("ramp", 0))
        if not n:
            return
        while True:
            s = int(time.time())
            self.hr[1000:1000 + n] = array.array("H", ((s + i) & 0xFFFF for i in range(n)))
            self.ir[0:n] = array.array("H", ((s + 2 * i) & 0x7FFF for i in range(n)))
            for i in range(n):
                self.coils[1000 + i] = (s + i) & 1
            await asyncio.sleep(1.0 - (time.time() % 1.0))

    def answer(self, fc: int, start: int, count: int) -> bytes | None:
        if fc in (3, 4):
            if not 1 <= count <= 125 or start + count > 65536:
                return None
            a = (self.hr if fc == 3 else self.ir)[start:start + count]
            if sys.byteorder == "little":
                a.byteswap()
            data = a.tobytes()
            self.seen_request(count)
        elif fc in (1, 2):
            if not 1 <= count <= 2000 or start + count > 65536:
                return None
            bits = bytes((self.coils if fc == 1 else self.di)[start:start + count]).translate(_BITS01)[::-1]
            data = int(bits, 2).to_bytes((count + 7) // 8, "little")
            self.seen_request(count)
        else:
            return None
        return bytes([fc, len(data)]) + data

    async def start(self) -> dict:
        outer = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport):
                self.t, self.buf = transport, b""

            def data_received(self, data):
                self.buf += data
                out = []
                while len(self.buf) >= 8:
                    length = int.from_bytes(self.buf[4:6], "big")
                    if len(self.buf) < 6 + length:
                        break
                    frame, self.buf = self.buf[:6 + length], self.buf[6 + length:]
                    tid, unit, fc = frame[0:2], frame[6], frame[7]
                    start, count = struct.unpack(">HH", frame[8:12]) if len(frame) >= 12 else (0, 0)
                    pdu = outer.answer(fc, start, count)
                    if pdu is None:
                        pdu = bytes([fc | 0x80, 2 if fc in (1, 2, 3, 4) else 1])
                    out.append(tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu)
                if out:
                    self.t.write(b"".join(out))

        port = int(self.opts.get("port", 0))
        self.server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        return {"port": self.server.sockets[0].getsockname()[1]}

    async def stop(self) -> None:
        if self.server:
            self.server.close()


# ---------------------------------------------------------------- S7


class S7Bench(Base):
    """Machine k: DB1.DBX(6k).0 run, DB1.DBD(6k+2) UDINT counter. Others: DB1.DBW(6M+2i) INT (M machines)."""

    def __init__(self, opts: dict[str, Any]):
        super().__init__(opts)
        self.db1 = bytearray(6 * self.machines + 2 * int(opts.get("others", 0)) + 2)
        for k in range(self.machines):
            self.db1[6 * k] = 1
        self.srv = None

    def set_counter(self, k: int, value: int) -> None:
        from snap7.datatypes import S7Area

        lock = self.srv.area_locks.get((S7Area.DB, 1)) if self.srv else None
        data = struct.pack(">I", value & 0xFFFFFFFF)
        if lock is not None:
            with lock:
                self.db1[6 * k + 2:6 * k + 6] = data
        else:
            self.db1[6 * k + 2:6 * k + 6] = data

    @property
    def requests(self) -> int:  # counted by the server thread
        return self.srv.read_jobs if self.srv else 0

    @requests.setter
    def requests(self, value: int) -> None:
        pass

    @property
    def values(self) -> int:
        return self.srv.read_items if self.srv else 0

    @values.setter
    def values(self, value: int) -> None:
        pass

    async def start(self) -> dict:
        from snap7.type import SrvArea

        from edge_agent.simulator.s7 import S7Server

        outer = self

        class Counting(S7Server):
            def _process_request(self, request_data, client_address):
                is_read = len(request_data) >= 12 and request_data[1] == 0x01 and request_data[10] == 0x04
                if is_read and not outer.first_request_reported:
                    outer.first_request_reported = True
                    emit({"report": True, "first_request": time.time()})
                return super()._process_request(request_data, client_address)

        self.srv = Counting(pdu_limit=int(self.opts.get("pdu", 480)))
        self.srv.register_area(SrvArea.DB, 1, self.db1)
        self.extra = {int(db): bytearray(size) for db, size in self.opts.get("dbs", {}).items()}
        for db, memory in self.extra.items():
            self.srv.register_area(SrvArea.DB, db, memory)
        port = int(self.opts.get("port", 0)) or _free_port()
        await asyncio.to_thread(self.srv.start_to, "127.0.0.1", port)
        return {"port": port}

    async def stop(self) -> None:
        if self.srv is not None:
            await asyncio.to_thread(self.srv.stop)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- OPC UA

NS = "urn:edge-agent:bench"


class OpcUaBench(Base):
    """Machine k: nsu=urn:edge-agent:bench;s=m{k}.run (Boolean), s=m{k}.parts (UInt32). Others: s=v{i} (UInt16)."""

    async def start(self) -> dict:
        import logging

        from asyncua import Server, ua
        from asyncua.server.internal_session import InternalSession

        logging.getLogger("asyncua").setLevel(logging.ERROR)
        outer = self
        original = InternalSession.read

        async def counting_read(session, params):
            nodes = params.NodesToRead
            if any(n.NodeId.NamespaceIndex == outer.ns for n in nodes):  # not the client's own housekeeping reads
                outer.seen_request(len(nodes))
            return await original(session, params)

        self.ns = -1
        InternalSession.read = counting_read
        port = int(self.opts.get("port", 0)) or _free_port()
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        server.socket_address = ("127.0.0.1", port)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = self.ns = await server.register_namespace(NS)
        objects = server.nodes.objects
        folder = await objects.add_folder(ua.NodeId("bench", idx), f"{idx}:bench")
        self.ua, self.server = ua, server
        self.parts = []
        for k in range(self.machines):
            await folder.add_variable(ua.NodeId(f"m{k}.run", idx), f"{idx}:m{k}.run", ua.Variant(True, ua.VariantType.Boolean))
            v = await folder.add_variable(ua.NodeId(f"m{k}.parts", idx), f"{idx}:m{k}.parts",
                                          ua.Variant(0, ua.VariantType.UInt32))
            self.parts.append(v.nodeid)
        self.others = []
        for i in range(int(self.opts.get("others", 0))):
            v = await folder.add_variable(ua.NodeId(f"v{i}", idx), f"{idx}:v{i}", ua.Variant(i & 0xFFFF, ua.VariantType.UInt16))
            self.others.append(v.nodeid)
        await server.start()
        return {"port": port, "url": f"opc.tcp://127.0.0.1:{port}/"}

    async def set_counter(self, k: int, value: int) -> None:
        ua = self.ua
        await self.server.write_attribute_value(self.parts[k], ua.DataValue(ua.Variant(value & 0xFFFFFFFF, ua.VariantType.UInt32)))

    async def ramp_task(self) -> None:
        if not self.opts.get("ramp"):
            return
        ua = self.ua
        while True:
            s = int(time.time())
            for i, node in enumerate(self.others):
                await self.server.write_attribute_value(node, ua.DataValue(ua.Variant((s + i) & 0xFFFF, ua.VariantType.UInt16)))
            await asyncio.sleep(1.0 - (time.time() % 1.0))

    async def stop(self) -> None:
        await self.server.stop()


KINDS = {"modbus": ModbusServer, "s7": S7Bench, "opcua": OpcUaBench}


def main() -> None:
    kind, opts = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    try:
        asyncio.run(KINDS[kind](opts).main())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
