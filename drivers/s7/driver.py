"""Siemens S7 driver on python-snap7's asyncio client (`snap7.AsyncClient`, pure Python).

The client has no reconnect of its own: a dead connection raises `ConnectionLost` and
the sampler closes, backs off and reconnects. Reads follow the plan of
`drivers.s7.planner` for the PDU size the PLC granted at connect time.

`AsyncClient.read_multi_vars` in python-snap7 3.3 sends one request per item, so
multi-variable reads are built here with the library's own PDU encoder
(`S7Protocol.build_multi_read_request`) and sent with `AsyncClient._send_receive`
(serialised by the client's lock). Both are internal to python-snap7; the pin
`python-snap7>=3.3,<3.4` and the tests against its server guard that.

Per-tag problems never raise: an item the PLC answers with an error code (DB missing,
address out of range / optimized block access, access denied) or a job it rejects
(PUT/GET not permitted) becomes BAD samples naming the tag, its address and the
reason; a PLC in STOP makes every tag BAD ("values are frozen") until it runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from operator import itemgetter

from snap7 import AsyncClient
from snap7.error import S7ConnectionError, S7Error, S7ProtocolError, S7TimeoutError, get_protocol_error_message
from snap7.s7protocol import S7_RETURN_CODES
from snap7.type import Parameter

from drivers.base import Health, scaled
from drivers.s7.address import S7Address, decode, parse
from drivers.s7.decoder import RangeDecoder
from drivers.s7.planner import Item, Plan, Request, plan
from edge_agent.config import S7Device, Tag
from edge_agent.errors import ConnectionLost, DeviceRejected
from edge_agent.model import Quality, Sample, good_samples, now

log = logging.getLogger("drivers.s7")

AREA_CODES = {"I": 0x81, "Q": 0x82, "M": 0x83, "DB": 0x84}  # S7 area ids on the wire
CONNECTION_TYPES = {"PG": 1, "OP": 2, "S7_BASIC": 3}
OK = 0xFF
SZL_CPU_STATE = 0x0424
RUN = 0x08


class S7Driver:
    def __init__(self, device: S7Device, tags: Sequence[Tag]):
        self.device = device
        self.tags = list(tags)
        self.health = Health()
        self._order = {t.name: i for i, t in enumerate(self.tags)}
        self._by_name = {t.name: t for t in self.tags}
        self.addresses: dict[str, S7Address] = {t.name: parse(t.address, t.type, device) for t in self.tags}
        self.read_plan: Plan | None = None  # made at connect, for the PDU size the PLC granted
        self.plan: list[Request] = []  # the requests of one poll (the sampler sizes its guard by len(plan))
        self.pdu_size: int | None = None
        self.cpu_state: str | None = None  # RUN | STOP | None (unknown / not checked)
        self._client: AsyncClient | None = None
        self._state_checked_at = float("-inf")
        self._state_supported = True
        self._alone: set[str] = set()  # tags the PLC refused inside a merged read: read on their own
        self._scales = {t.name: (t.scale.gain, t.scale.offset) for t in self.tags if t.scale is not None}
        self._decoders: list[RangeDecoder] = []  # one per range of read_plan
        self._in_tag_order = None  # plan order -> tag order, when every range reads fine

    # ---------------------------------------------------------------- connection

    async def connect(self) -> None:
        d = self.device
        client = AsyncClient()
        connection_type, rack, slot = CONNECTION_TYPES[d.connection_type], d.rack, d.slot
        if d.remote_tsap is not None:  # the TSAP is (connection type << 8) | (rack << 5) | slot
            connection_type, rack, slot = d.remote_tsap >> 8, (d.remote_tsap >> 5) & 0x07, d.remote_tsap & 0x1F
        client.set_connection_type(connection_type)
        if d.local_tsap is not None:
            client.local_tsap = d.local_tsap
        client.set_param(Parameter.PDURequest, d.pdu_size)
        where = f"{d.host}:{d.port} (rack {rack}, slot {slot})" if d.remote_tsap is None else \
            f"{d.host}:{d.port} (TSAP {d.remote_tsap:04X})"
        try:
            async with asyncio.timeout(d.timeout):
                await client.connect(d.host, rack, slot, d.port)
        except (TimeoutError, S7Error, OSError) as e:
            await _disconnect(client, d.timeout)
            why = "no answer" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
            if "closed by peer" in why:  # TCP was accepted, the ISO/S7 handshake was not
                why += "; check rack/slot (or TSAP) and that the CPU has a free connection"
            raise ConnectionLost(d.name, f"cannot connect to {where}: {why}") from e
        if client.connection is not None:
            client.connection.timeout = d.timeout  # per-receive timeout inside the client
        self._alone.clear()
        try:
            read_plan = await asyncio.to_thread(self._plan, client.get_pdu_length())  # ms, but O(n log n)
        except ValueError as e:  # a PDU too small to carry one item: retrying will not help
            await _disconnect(client, d.timeout)
            raise DeviceRejected(d.name, f"{where}: {e}") from None
        self._client = client
        self.pdu_size = client.get_pdu_length()
        self._use(read_plan)
        self.cpu_state, self._state_supported, self._state_checked_at = None, True, float("-inf")
        log.info("event=s7_connected device=%s endpoint=%s pdu=%d requests_per_poll=%d",
                 d.name, where, self.pdu_size, len(self.plan))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _disconnect(client, self.device.timeout)

    # ---------------------------------------------------------------- reading

    async def read(self) -> list[Sample]:
        if self._client is None or self.read_plan is None:
            raise ConnectionLost(self.device.name, "not connected")
        state = await self._check_cpu_state()
        if state == "STOP":
            ts = now()
            why = f"PLC {self.device.name} is in STOP: values are frozen"
            self.health.last_error = why
            return [Sample(t.name, None, ts, Quality.BAD, f"{t.name} ({self.addresses[t.name].text}): {why}")
                    for t in self.tags]
        p = self.read_plan
        buffers, stamps, failures = await self._fetch(p)
        if self._in_tag_order is not None and not any(failures):  # the usual poll: whole ranges at once
            samples: list[Sample] = []
            for decode_range, data, ts in zip(self._decoders, buffers, stamps):
                samples += good_samples(decode_range.names, decode_range(data), ts)
            return list(self._in_tag_order(samples))
        samples, refused = await self._salvage(p, buffers, stamps, failures, isolate=True)
        if refused:  # from now on read them on their own, so the rest of their range reads in one item
            self._alone |= refused
            self._use(await asyncio.to_thread(self._plan, p.pdu_size))
            log.warning("event=s7_tags_read_alone device=%s tags=%s requests_per_poll=%d",
                        self.device.name, ",".join(sorted(refused)), len(self.plan))
        samples.sort(key=lambda s: self._order[s.tag])
        return samples

    def _plan(self, pdu_size: int) -> Plan:
        d = self.device
        return plan(self.addresses.items(), pdu_size, d.max_gap, d.max_items, alone=self._alone)

    def _use(self, read_plan: Plan) -> None:
        """Read by this plan from now on; compile its range decoders and the way back to tag order."""
        self.read_plan, self.plan = read_plan, read_plan.requests
        self._decoders = [RangeDecoder(r.start, r.members, self._scales) for r in read_plan.ranges]
        names = [n for d in self._decoders for n in d.names]
        if sorted(names) == sorted(self._order):  # each tag once: true of every plan, but checked
            at = {n: i for i, n in enumerate(names)}
            positions = [at[t.name] for t in self.tags]
            self._in_tag_order = itemgetter(*positions) if len(positions) > 1 else lambda xs: (xs[positions[0]],)
        else:
            self._in_tag_order = None

    async def _fetch(self, p: Plan) -> tuple[list[bytearray], list[float], list[list[tuple[int, int, int, str]]]]:
        """Send a plan's requests: each range's bytes, the time they came, and its failed items
        as (start, end, return code, reason)."""
        buffers = [bytearray(r.size) for r in p.ranges]
        stamps = [0.0] * len(p.ranges)
        failures: list[list[tuple[int, int, int, str]]] = [[] for _ in p.ranges]
        for request in p.requests:
            results = await self._exchange(request.items)
            ts = now()
            for item, (code, data, reason) in zip(request.items, results):
                r = p.ranges[item.range]
                stamps[item.range] = ts
                if code == OK:
                    buffers[item.range][item.start - r.start:item.end - r.start] = data
                else:
                    failures[item.range].append((item.start, item.end, code, reason))
        return buffers, stamps, failures

    async def _salvage(self, p: Plan, buffers: list[bytearray], stamps: list[float],
                       failures: list[list[tuple[int, int, int, str]]], *, isolate: bool) -> tuple[list[Sample], set[str]]:
        """Samples of a plan some items of which failed, tag by tag; with `isolate`, tags inside a
        merged item the PLC refused as out of range are read alone to find the culprit, whose
        names come back as the second value."""
        samples: list[Sample] = []
        retry: list[tuple[str, S7Address]] = []
        for index, r in enumerate(p.ranges):
            for name, addr in r.members:
                hit = next((f for f in failures[index] if f[0] < addr.end and addr.start < f[1]), None)
                if hit is None:
                    raw = bytes(buffers[index][addr.start - r.start:addr.end - r.start])
                    samples.append(Sample(name, scaled(self._by_name[name], decode(raw, addr)), stamps[index]))
                elif isolate and hit[2] == 0x05 and (hit[0], hit[1]) != (addr.start, addr.end):
                    retry.append((name, addr))  # out of range inside a merged read: find out which tag is
                else:
                    why = f"{name} ({addr.text}): {hit[3]}"
                    self.health.last_error = why
                    samples.append(Sample(name, None, stamps[index], Quality.BAD, why))
        refused: set[str] = set()
        if retry:
            single = plan(retry, p.pdu_size, max_gap=-1, item_limit=self.device.max_items)
            alone, _ = await self._salvage(single, *await self._fetch(single), isolate=False)
            refused = {s.tag for s in alone if s.quality == Quality.BAD}
            samples.extend(alone)
        return samples, refused

    async def _exchange(self, items: list[Item]) -> list[tuple[int, bytes, str]]:
        """One multi-variable read; (return code, data, reason) per item."""
        client = self._client
        if client is None or not client.get_connected():
            raise ConnectionLost(self.device.name, "not connected")
        specs = [(AREA_CODES[i.area], i.db, i.start, i.size) for i in items]
        pdu = client.protocol.build_multi_read_request(specs)
        self.health.requests += 1
        try:
            # the client times out each receive after device.timeout (set at connect); a send that
            # cannot drain is cut by the sampler's guard over the whole poll
            response = await client._send_receive(pdu)
        except S7TimeoutError:
            raise ConnectionLost(self.device.name, f"no answer to a read within {self.device.timeout}s") from None
        except (S7ConnectionError, OSError) as e:
            raise ConnectionLost(self.device.name, f"read failed: {e}") from e
        except S7ProtocolError as e:
            if not e.error_code:  # a garbled or out-of-sequence answer: start afresh
                raise ConnectionLost(self.device.name, f"bad answer to a read: {e}") from e
            reason = _job_error(e.error_code)
            return [(-1, b"", reason) for _ in items]
        params = response.get("parameters") or {}
        if params.get("function_code") != 0x04 or params.get("item_count") != len(items):
            raise ConnectionLost(self.device.name, f"answer does not match the read request: {params}")
        try:
            parts = _split_items(response.get("raw_data", b""), len(items))
        except ValueError as e:
            raise ConnectionLost(self.device.name, f"bad answer to a read: {e}") from None
        out = []
        for item, (code, data) in zip(items, parts):
            if code != OK:
                out.append((code, b"", _item_error(code, item)))
            elif len(data) != item.size:
                out.append((-1, b"", f"the PLC answered {len(data)} bytes for {_span(item)} instead of {item.size}"))
            else:
                out.append((OK, data, ""))
        return out

    # ---------------------------------------------------------------- CPU state

    async def _check_cpu_state(self) -> str | None:
        """RUN, STOP or None (not checked / unknown); re-read every cpu_state_interval, every poll in STOP."""
        interval = self.device.cpu_state_interval
        if not interval or not self._state_supported or self._client is None:
            return None
        t = time.monotonic()
        if self.cpu_state != "STOP" and t - self._state_checked_at < interval:
            return self.cpu_state
        self._state_checked_at = t
        self.health.requests += 1
        try:
            async with asyncio.timeout(self.device.timeout):
                szl = await self._client.read_szl(SZL_CPU_STATE, 0)
        except TimeoutError:
            raise ConnectionLost(self.device.name, f"no answer to a CPU state request within {self.device.timeout}s") \
                from None
        except (S7ConnectionError, S7TimeoutError, OSError) as e:
            raise ConnectionLost(self.device.name, f"CPU state request failed: {e}") from e
        except (S7ProtocolError, RuntimeError) as e:  # this PLC does not offer SZL 0x0424
            log.warning("event=s7_cpu_state_unsupported device=%s error=%r", self.device.name, str(e))
            self._state_supported, self.cpu_state = False, None
            return None
        data = bytes(szl.Data[:szl.Header.LengthDR])
        # SZL data: record length (2), record count (2), then records; the mode is byte 3 of the first record
        code = data[7] if len(data) >= 8 else 0
        previous = self.cpu_state
        self.cpu_state = None if code == 0 else "RUN" if code == RUN else "STOP"
        if self.cpu_state != previous:
            log.log(logging.WARNING if self.cpu_state == "STOP" else logging.INFO,
                    "event=s7_cpu_state device=%s state=%s mode=0x%02X",
                    self.device.name, self.cpu_state or "unknown", code)
        return self.cpu_state


# ---------------------------------------------------------------- helpers


async def _disconnect(client: AsyncClient, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await client.disconnect()
    except (TimeoutError, S7Error, OSError) as e:
        log.debug("event=s7_disconnect_failed error=%r", str(e))


def _split_items(raw: bytes, count: int) -> list[tuple[int, bytes]]:
    """The data section of a read response -> (return code, data) per item."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ValueError(f"answer ends before item {i + 1} of {count}")
        code, transport, length = raw[offset], raw[offset + 1], int.from_bytes(raw[offset + 2:offset + 4], "big")
        offset += 4
        # the length counts bits, except for transport sizes BIT (0x03), REAL (0x07) and OCTET STRING (0x09)
        size = length if transport in (0x03, 0x07, 0x09) else (length + 7) // 8
        if code != OK:
            out.append((code, b""))
            offset += size
        else:
            if offset + size > len(raw):
                raise ValueError(f"item {i + 1} of {count} is cut short")
            out.append((code, bytes(raw[offset:offset + size])))
            offset += size
        if i < count - 1 and size % 2:
            offset += 1  # fill byte
    return out


def _span(item: Item) -> str:
    where = f"DB{item.db}" if item.area == "DB" else item.area
    return f"{where} bytes {item.start}..{item.end - 1}"


def _item_error(code: int, item: Item) -> str:
    block = f"DB{item.db}" if item.area == "DB" else f"area {item.area}"
    if code == 0x0A:
        return f"{block} does not exist in the PLC (return code 0x0A)"
    if code == 0x05:
        return (f"{_span(item)} are out of range: {block} is shorter, or it has 'Optimized block access' "
                f"switched on (TIA Portal: block properties > Attributes) (return code 0x05)")
    if code == 0x03:
        return (f"access to {block} is not allowed: on S7-1200/1500 permit PUT/GET communication "
                f"and check the protection level (return code 0x03)")
    return f"{_span(item)}: {S7_RETURN_CODES.get(code, 'unknown error')} (return code 0x{code:02X})"


def _job_error(code: int) -> str:
    text = f"the PLC rejected the read: {get_protocol_error_message(code)} (error 0x{code:04X})"
    if code == 0x8104:  # what S7-1200/1500 answer when PUT/GET is not permitted
        text += ("; on S7-1200/1500 tick 'Permit access with PUT/GET communication from remote partner' "
                 "(CPU properties > Protection & Security > Connection mechanisms)")
    return text
