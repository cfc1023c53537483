"""Modbus TCP driver on pymodbus' asyncio client.

pymodbus' own reconnect and retries are switched off: the sampler owns reconnects
(with backoff and jitter), so a dead device is seen as dead at once instead of
being retried inside a poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.base import Health, scaled
from drivers.modbus.address import decode, parse
from drivers.modbus.planner import Request, plan
from edge_agent.config import ModbusTcpDevice, Tag
from edge_agent.errors import ConnectionLost
from edge_agent.model import Quality, Sample, now

_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "device failure", 6: "device busy", 10: "gateway path unavailable",
                    11: "gateway target failed to respond"}


class _ExceptionResponse(Exception):
    def __init__(self, code: int):
        self.code = code
        super().__init__(f"Modbus exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})")


class ModbusDriver:
    def __init__(self, device: ModbusTcpDevice, tags: Sequence[Tag]):
        self.device = device
        self.tags = list(tags)
        self.health = Health()
        self._by_name = {t.name: t for t in self.tags}
        self.plan: list[Request] = plan((t.name, parse(t.address, t.type), device.unit) for t in self.tags)
        self._client: AsyncModbusTcpClient | None = None

    async def connect(self) -> None:
        d = self.device
        self._client = AsyncModbusTcpClient(
            d.host, port=d.port, timeout=d.timeout, retries=0, reconnect_delay=0, name=d.name
        )
        try:
            async with asyncio.timeout(d.timeout + 1):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as e:
            ok, why = False, str(e) or type(e).__name__
        else:
            why = "connection refused or unreachable"
        if not ok:
            self._client.close()
            self._client = None
            raise ConnectionLost(d.name, f"cannot connect to {d.host}:{d.port}: {why}")

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self) -> list[Sample]:
        samples: list[Sample] = []
        for request in self.plan:
            try:
                values = await self._request(request.table, request.unit, request.start, request.count)
            except _ExceptionResponse as e:
                samples.extend(await self._isolate(request, e))
                continue
            samples.extend(self._decode(request, values, now()))
        return samples

    async def _isolate(self, request: Request, error: _ExceptionResponse) -> list[Sample]:
        """An exception inside a coalesced block: read each tag alone so one bad address blanks only itself."""
        if len(request.members) == 1:
            name, addr = request.members[0]
            self.health.last_error = f"{name} ({addr.table}:{addr.number}): {error}"
            return [Sample(name, None, now(), Quality.BAD, str(error))]
        out: list[Sample] = []
        for name, addr in request.members:
            single = Request(request.table, request.unit, addr.number, addr.width, [(name, addr)])
            try:
                values = await self._request(single.table, single.unit, single.start, single.count)
            except _ExceptionResponse as e:
                out.extend(await self._isolate(single, e))
                continue
            out.extend(self._decode(single, values, now()))
        return out

    def _decode(self, request: Request, values: list, ts: float) -> list[Sample]:
        out = []
        for name, addr in request.members:
            offset = addr.number - request.start
            if addr.data_type == "bool":
                raw = bool(values[offset])
            else:
                raw = decode(list(values[offset:offset + addr.width]), addr.data_type, self.device.byte_order)
            out.append(Sample(name, scaled(self._by_name[name], raw), ts))
        return out

    async def _request(self, table: str, unit: int, start: int, count: int) -> list:
        client = self._client
        if client is None or not client.connected:
            raise ConnectionLost(self.device.name, "not connected")
        call = {"hr": client.read_holding_registers, "ir": client.read_input_registers,
                "coil": client.read_coils, "di": client.read_discrete_inputs}[table]
        self.health.requests += 1
        try:
            async with asyncio.timeout(self.device.timeout):
                response = await call(start, count=count, device_id=unit)
        except (TimeoutError, ModbusException, OSError) as e:
            raise ConnectionLost(self.device.name, f"{table}:{start}+{count}: {e or type(e).__name__}") from e
        if response.isError():
            raise _ExceptionResponse(response.exception_code)
        return list(response.bits[:count]) if table in ("coil", "di") else list(response.registers)
