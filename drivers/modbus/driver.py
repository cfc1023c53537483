"""Modbus TCP and RTU driver on pymodbus' asyncio clients.

pymodbus' own reconnect and retries are switched off: the sampler owns reconnects
(with backoff and jitter), so a dead device is seen as dead at once instead of
being retried inside a poll.

Several unit ids may share one connection (RTU multi-drop line, TCP gateway): a unit
that does not answer makes only its own tags BAD for that poll; the connection counts
as lost only when no unit answered at all.

An exception response (illegal address) to a merged request is isolated by splitting
the request in halves until the culprit is found: the tag whose own registers fail is
reported BAD by name and from then on read alone, retried every `bad_tag_retry`
seconds; a gap between tags that cannot be read becomes a break the planner does not
merge across. Later polls therefore cost no extra requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.base import Health
from drivers.modbus.address import BIT_TABLES, ModbusAddress, parse
from drivers.modbus.decoder import RequestDecoder
from drivers.modbus.planner import Break, Request, plan
from edge_agent.config import Tag
from edge_agent.errors import ConnectionLost
from edge_agent.model import Quality, Sample, good_samples, now

log = logging.getLogger("drivers.modbus")

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "device failure", 5: "acknowledge", 6: "device busy",
                   10: "gateway path unavailable", 11: "gateway target failed to respond"}
# codes that say "these registers cannot be read like this": worth isolating and remembering
_ADDRESS_CODES = {1, 2, 3}
_GATEWAY_CODES = {10, 11}  # the unit behind the gateway is gone: like a unit that does not answer
_CALL_ERRORS = (ModbusException, OSError, TimeoutError)  # what a pymodbus call may raise
_BACKSTOP_SLACK = 1.0  # s: the poll's backstop fires device.timeout + 1 to + 2 s after a request was sent


class ModbusExceptionResponse(Exception):
    """The device answered a request with a Modbus exception code."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


_ExceptionResponse = ModbusExceptionResponse  # the earlier private name


class NoResponse(Exception):
    """A unit did not answer in time although the connection is up."""


@dataclass(slots=True)
class _Bad:
    error: str
    retry_at: float  # time.monotonic() of the next attempt


def make_client(device) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """A pymodbus client for a Modbus TCP or RTU device, without pymodbus' own retries and reconnects."""
    if device.protocol == "modbus_rtu":
        return AsyncModbusSerialClient(
            device.port, baudrate=device.baud_rate, bytesize=device.data_bits, parity=device.parity,
            stopbits=device.stop_bits, timeout=device.timeout, retries=0, reconnect_delay=0, name=device.name)
    return AsyncModbusTcpClient(device.host, port=device.port, timeout=device.timeout, retries=0,
                                reconnect_delay=0, name=device.name)


def endpoint(device) -> str:
    return device.port if device.protocol == "modbus_rtu" else f"{device.host}:{device.port}"


class ModbusDriver:
    def __init__(self, device, tags: Sequence[Tag]):
        self.device = device
        self.tags = list(tags)
        self.health = Health()
        self._by_name = {t.name: t for t in self.tags}
        self._addresses: dict[str, ModbusAddress] = {t.name: parse(t.address, t.type, device) for t in self.tags}
        self._scales = {t.name: (t.scale.gain, t.scale.offset) for t in self.tags if t.scale is not None}
        self._bad: dict[str, _Bad] = {}
        self._breaks: set[Break] = set()
        self.plan = self._replan()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._calls: dict = {}  # table -> the client's bound read method, set on connect

    # ------------------------------------------------------------ planning

    def unit_of(self, name: str) -> int:
        addr = self._addresses[name]
        return self.device.unit if addr.unit is None else addr.unit

    def _replan(self) -> list[Request]:
        breaks = set(self._breaks)
        for name in self._bad:
            a = self._addresses[name]
            breaks.add(Break(self.unit_of(name), a.table, a.number, a.end))
        return plan(((n, a, self.unit_of(n)) for n, a in self._addresses.items()), alone=self._bad.keys(),
                    breaks=breaks)

    @property
    def plan(self) -> list[Request]:
        """The read requests of one poll."""
        return self._plan

    @plan.setter
    def plan(self, requests: list[Request]) -> None:
        self._plan = list(requests)
        self._steps = [(r, self._decoder(r)) for r in self._plan]

    def _decoder(self, request: Request) -> RequestDecoder:
        return RequestDecoder(request.table, request.start, request.count, request.members,
                              self.device.byte_order, self._scales)

    @property
    def bad_tags(self) -> dict[str, str]:
        """Tags currently read alone because their registers answer an exception: name -> error."""
        return {n: b.error for n, b in self._bad.items()}

    # ------------------------------------------------------------ connection

    async def connect(self) -> None:
        d = self.device
        self._client = make_client(d)
        try:
            async with asyncio.timeout(d.timeout + 1):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as e:
            ok, why = False, str(e) or type(e).__name__
        else:
            why = "cannot open the serial port" if d.protocol == "modbus_rtu" else "connection refused or unreachable"
        if not ok:
            self._client.close()
            self._client = None
            raise ConnectionLost(d.name, f"cannot connect to {endpoint(d)}: {why}")
        c = self._client
        self._calls = {"hr": c.read_holding_registers, "ir": c.read_input_registers,
                       "coil": c.read_coils, "di": c.read_discrete_inputs}

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._calls = {}

    # ------------------------------------------------------------ reading

    async def read(self) -> list[Sample]:
        poll = _Poll()
        steps = iter(self._steps)
        while True:
            try:
                # one backstop timeout for the whole poll, pushed on before each request (_requests)
                async with asyncio.timeout(None) as backstop:
                    await self._requests(steps, poll, backstop)
                break
            except TimeoutError:  # the backstop fired although pymodbus times out after device.timeout
                self._no_answer(poll)  # then go on with the next request
        if poll.silent and not poll.answered:
            raise ConnectionLost(self.device.name, "; ".join(sorted(set(poll.silent.values()))))
        if poll.replan:
            self.plan = self._replan()
        return poll.samples

    async def _requests(self, steps, poll: _Poll, backstop: asyncio.Timeout) -> None:
        """Send the plan's requests (from where `steps` stands) and decode their answers into `poll`.

        Every request runs under `backstop`, which fires at least `device.timeout + 1` and at
        most a second more after the request was sent: an `asyncio.timeout` per request cost
        ~12 us (a timer handle scheduled and cancelled), this one is rescheduled about once a second.
        The request itself is `_call` written out: a coroutine more per request cost ~3 us.
        """
        samples, silent, bad, calls, health = poll.samples, poll.silent, self._bad, self._calls, self.health
        clock = asyncio.get_running_loop().time
        limit = self.device.timeout + 1
        deadline = 0.0
        for request, decoder in steps:
            unit = request.unit
            if silent and unit in silent:
                samples.extend(self._bad_samples(request, silent[unit]))
                continue
            single = decoder.single
            if bad and single in bad and clock() < bad[single].retry_at:
                samples.extend(self._bad_samples(request, bad[single].error))
                continue
            if deadline - (t := clock()) < limit:
                deadline = t + limit + _BACKSTOP_SLACK
                backstop.reschedule(deadline)
            client = self._client
            if client is None or not client.connected:
                raise ConnectionLost(self.device.name, "not connected")
            health.requests += 1
            poll.current = request
            try:
                response = await calls[request.table](request.start, count=request.count, device_id=unit)
            except _CALL_ERRORS as e:
                error = self._failure(e, request.table, unit, request.start, request.count)
                if not isinstance(error, NoResponse):
                    raise error from e
                silent[unit] = str(error)
                samples.extend(self._bad_samples(request, silent[unit]))
                continue
            if response.isError():
                e = ModbusExceptionResponse(response.exception_code)
                poll.answered += 1
                if e.code in _GATEWAY_CODES:
                    silent[unit] = f"unit {unit}: {e}"
                    samples.extend(self._bad_samples(request, silent[unit]))
                elif e.code in _ADDRESS_CODES:
                    if single in bad:  # the retry failed again
                        bad[single].retry_at = clock() + self.device.bad_tag_retry
                        samples.extend(self._bad_samples(request, bad[single].error))
                    else:
                        backstop.reschedule(None)  # its requests have timeouts of their own
                        deadline = 0.0
                        samples.extend(await self._isolate(request, e))
                        poll.replan = True
                else:  # device failure, busy: nothing to learn about the address map
                    samples.extend(self._bad_samples(request, f"unit {unit}: {e}"))
                continue
            poll.answered += 1
            if bad and single in bad:
                log.info("event=modbus_tag_recovered device=%s tag=%s", self.device.name, single)
                del bad[single]
                poll.replan = True
            values = response.bits if decoder.bits else response.registers
            if len(values) < request.count:
                samples.extend(self._bad_samples(request, _short(request, values)))
                continue
            samples += good_samples(decoder.names, decoder(values), now())

    def _no_answer(self, poll: _Poll) -> None:
        """The backstop fired on `poll.current`: its unit is silent for this poll, or the link is gone."""
        request = poll.current
        where = _where(request.table, request.start, request.count, request.unit)
        client = self._client
        if client is None or not client.connected:
            raise ConnectionLost(self.device.name, f"{where}: connection lost")
        poll.silent[request.unit] = f"unit {request.unit} did not answer within {self.device.timeout:g}s ({where})"
        poll.samples.extend(self._bad_samples(request, poll.silent[request.unit]))

    def _bad_samples(self, request: Request, error: str) -> list[Sample]:
        ts = now()
        return [Sample(name, None, ts, Quality.BAD, error) for name, _ in request.members]

    async def _isolate(self, request: Request, error: ModbusExceptionResponse) -> list[Sample]:
        """Split a failed request in halves (by distinct register spans) until the culprit is found.

        A span that fails alone: its tags are BAD, named, and remembered. Two halves that
        read fine alone but not together: the gap between them is remembered as a break.
        """
        spans = sorted({(a.number, a.width) for _, a in request.members})
        if len(spans) == 1:
            retry_at = asyncio.get_running_loop().time() + self.device.bad_tag_retry
            out = []
            for name, addr in request.members:
                tag = self._by_name[name]
                message = f"{name} ({tag.address}, unit {request.unit}): {error}"
                self._bad[name] = _Bad(message, retry_at)
                self.health.last_error = message
                log.warning("event=modbus_tag_bad device=%s tag=%s error=%r", self.device.name, name, str(error))
                out.append(Sample(name, None, now(), Quality.BAD, message))
            return out
        left_spans = set(spans[:len(spans) // 2])
        halves = [_sub(request, [m for m in request.members if (m[1].number, m[1].width) in left_spans]),
                  _sub(request, [m for m in request.members if (m[1].number, m[1].width) not in left_spans])]
        out: list[Sample] = []
        clean = True
        for half in halves:
            try:
                values = await self.read_block(half.table, half.unit, half.start, half.count)
            except ModbusExceptionResponse as e:
                clean = False
                if e.code in _ADDRESS_CODES:
                    out.extend(await self._isolate(half, e))
                else:
                    out.extend(self._bad_samples(half, str(e)))
                continue
            out.extend(self._decode(half, values, now()))
        left, right = halves
        if clean:
            if left.end <= right.start:
                self._breaks.add(Break(request.unit, request.table, left.end, right.start))
                log.info("event=modbus_gap_unreadable device=%s unit=%s table=%s from=%s to=%s",
                         self.device.name, request.unit, request.table, left.end, right.start)
            else:
                log.warning("event=modbus_overlap_unreadable device=%s unit=%s table=%s start=%s",
                            self.device.name, request.unit, request.table, request.start)
        return out

    def _decode(self, request: Request, values: list, ts: float) -> list[Sample]:
        if len(values) < request.count:
            return self._bad_samples(request, _short(request, values))
        decoder = self._decoder(request)
        return good_samples(decoder.names, decoder(values), ts)

    async def read_block(self, table: str, unit: int, start: int, count: int) -> list:
        """One read request: registers as ints or bits as bools.

        Raises ModbusExceptionResponse (the device answered with an exception code),
        NoResponse (this unit did not answer in time), ConnectionLost (the link is gone).
        """
        values = await self._fetch(table, unit, start, count)
        return list(values[:count]) if table in BIT_TABLES else list(values)

    async def _fetch(self, table: str, unit: int, start: int, count: int) -> list:
        """`read_block` without copying: pymodbus' own list (bits padded to a byte)."""
        try:
            # pymodbus times out after device.timeout; this is the backstop
            async with asyncio.timeout(self.device.timeout + 1):
                return await self._call(table, unit, start, count)
        except TimeoutError as e:
            raise self._timeout_error(table, unit, start, count) from e

    async def _call(self, table: str, unit: int, start: int, count: int) -> list:
        """One request without a timeout of its own (pymodbus' applies): the caller holds the backstop."""
        client = self._client
        if client is None or not client.connected:
            raise ConnectionLost(self.device.name, "not connected")
        self.health.requests += 1
        try:
            response = await self._calls[table](start, count=count, device_id=unit)
        except _CALL_ERRORS as e:
            raise self._failure(e, table, unit, start, count) from e
        if response.isError():
            raise ModbusExceptionResponse(response.exception_code)
        return response.bits if table in BIT_TABLES else response.registers

    def _failure(self, e: BaseException, table: str, unit: int, start: int, count: int) -> Exception:
        """What a pymodbus call raising `e` means: ConnectionLost, or NoResponse (this unit did not answer)."""
        if isinstance(e, ConnectionException):
            return ConnectionLost(self.device.name, f"{_where(table, start, count, unit)}: {e}")
        if isinstance(e, (TimeoutError, ModbusIOException)):
            return self._timeout_error(table, unit, start, count)
        return ConnectionLost(self.device.name, f"{_where(table, start, count, unit)}: {e or type(e).__name__}")

    def _timeout_error(self, table: str, unit: int, start: int, count: int) -> Exception:
        """No answer in time: NoResponse while the connection is up, else ConnectionLost."""
        where = _where(table, start, count, unit)
        client = self._client
        if client is not None and client.connected:
            return NoResponse(f"unit {unit} did not answer within {self.device.timeout:g}s ({where})")
        return ConnectionLost(self.device.name, f"{where}: connection lost")


@dataclass(slots=True)
class _Poll:
    """What one `read()` has gathered so far (it outlives a backstop timeout, see `ModbusDriver.read`)."""

    samples: list[Sample] = field(default_factory=list)
    silent: dict[int, str] = field(default_factory=dict)  # unit -> why it is skipped for the rest of this poll
    answered: int = 0
    replan: bool = False
    current: Request | None = None  # the request in flight


def _where(table: str, start: int, count: int, unit: int) -> str:
    return f"{table}:{start}+{count} unit {unit}"


def _short(request: Request, values: list) -> str:
    what = "bits" if request.table in BIT_TABLES else "registers"
    return f"unit {request.unit} answered {len(values)} of {request.count} {what} ({_where(request.table, request.start, request.count, request.unit)})"


def _sub(request: Request, members: list[tuple[str, ModbusAddress]]) -> Request:
    start = min(a.number for _, a in members)
    end = max(a.end for _, a in members)
    return Request(request.table, request.unit, start, end - start, members)
