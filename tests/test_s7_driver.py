"""S7 driver against a real python-snap7 server on 127.0.0.1 (ephemeral port), values set by the test.

The server serves the bytearrays registered with it by reference; the tests write
them with python-snap7's own setters (`snap7.util`), independent of our codecs.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import snap7.util as su
from snap7.type import SrvArea

from drivers.s7.driver import S7Driver
from drivers.s7.planner import lower_bound
from edge_agent.config import S7Device, Tag
from edge_agent.errors import ConnectionLost
from edge_agent.model import Quality
from edge_agent.simulator.s7 import S7Server

AREAS = {"DB1": (SrvArea.DB, 1, 64), "M": (SrvArea.MK, 0, 64), "I": (SrvArea.PE, 0, 32), "Q": (SrvArea.PA, 0, 32)}


class Plc:
    """A python-snap7 server with DB1, M, I and Q; restartable on the same port."""

    def __init__(self, extra: dict[str, tuple[SrvArea, int, int]] | None = None, **server_options):
        self.memory = {name: bytearray(size) for name, (_, _, size) in {**AREAS, **(extra or {})}.items()}
        self.layout = {**AREAS, **(extra or {})}
        self.options = server_options
        self.port = 0
        self.server: S7Server | None = None

    def start(self) -> None:
        server = S7Server(**self.options)
        for name, (area, index, _) in self.layout.items():
            server.register_area(area, index, self.memory[name])
        server.start_to("127.0.0.1", self.port)
        self.port = server.bound_port
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def read_jobs(self) -> int:
        assert self.server is not None
        return self.server.read_jobs


@pytest.fixture
def plc():
    p = Plc()
    p.start()
    yield p
    p.stop()


def device(port: int, **options) -> S7Device:
    options = {"timeout": 1.0, "cpu_state_interval": 0, **options}
    return S7Device(name="plc", protocol="s7", host="127.0.0.1", port=port, **options)


def tag(name: str, address: str, data_type: str) -> Tag:
    return Tag(name=name, device="plc", address=address, type=data_type)


# every address form and data type: (name, address, type, setter(memory, value), value round 1, value round 2)
FORMS = [
    ("db_bool0", "DB1.DBX0.0", "BOOL", lambda m, v: su.set_bool(m["DB1"], 0, 0, v), True, False),
    ("db_bool7", "DB1.DBX0.7", "BOOL", lambda m, v: su.set_bool(m["DB1"], 0, 7, v), False, True),
    ("db_byte", "DB1.DBB1", "BYTE", lambda m, v: su.set_byte(m["DB1"], 1, v), 0x5A, 0xFF),
    ("db_word", "DB1.DBW2", "WORD", lambda m, v: su.set_word(m["DB1"], 2, v), 0xBEEF, 1),
    ("db_int", "DB1.DBW4", "INT", lambda m, v: su.set_int(m["DB1"], 4, v), -32768, 32767),
    ("db_uint", "DB1.DBW6", "UINT", lambda m, v: su.set_uint(m["DB1"], 6, v), 65535, 0),
    ("db_dword", "DB1.DBD8", "DWORD", lambda m, v: su.set_dword(m["DB1"], 8, v), 0xDEADBEEF, 7),
    ("db_dint", "DB1.DBD12", "DINT", lambda m, v: su.set_dint(m["DB1"], 12, v), -2_000_000_000, 123456),
    ("db_udint", "DB1.DBD16", "UDINT", lambda m, v: su.set_udint(m["DB1"], 16, v), 4_294_967_295, 42),
    ("db_real", "%DB1.DBD20", "REAL", lambda m, v: su.set_real(m["DB1"], 20, v), 3.5, -0.25),
    ("db_lreal", "DB1.DBB24", "LREAL", lambda m, v: su.set_lreal(m["DB1"], 24, v), 1e100, -2.5e-7),
    ("db_string", "DB1.DBB32", "STRING[10]", lambda m, v: su.set_string(m["DB1"], 32, v, 10), "Teil-A42", "x"),
    ("db_sint", "DB1.DBB44", "SINT", lambda m, v: su.set_sint(m["DB1"], 44, v), -128, 127),
    ("db_usint", "DB1.DBB45", "USINT", lambda m, v: su.set_usint(m["DB1"], 45, v), 200, 3),
    ("db_char", "DB1.DBB46", "CHAR", lambda m, v: su.set_char(m["DB1"], 46, v), "Q", "z"),
    ("m_bool", "M0.0", "BOOL", lambda m, v: su.set_bool(m["M"], 0, 0, v), True, False),
    ("m_byte", "MB1", "BYTE", lambda m, v: su.set_byte(m["M"], 1, v), 17, 18),
    ("m_word", "MW10", "INT", lambda m, v: su.set_int(m["M"], 10, v), -5, 5),
    ("m_dword", "MD20", "REAL", lambda m, v: su.set_real(m["M"], 20, v), 0.5, 100.0),
    ("i_bool", "I0.0", "BOOL", lambda m, v: su.set_bool(m["I"], 0, 0, v), True, False),
    ("e_bool", "E0.1", "BOOL", lambda m, v: su.set_bool(m["I"], 0, 1, v), False, True),
    ("i_byte", "EB1", "BYTE", lambda m, v: su.set_byte(m["I"], 1, v), 9, 10),
    ("i_word", "IW2", "INT", lambda m, v: su.set_int(m["I"], 2, v), 27648, -27648),
    ("e_word", "EW4", "UINT", lambda m, v: su.set_uint(m["I"], 4, v), 1000, 2000),
    ("i_dword", "ID8", "DINT", lambda m, v: su.set_dint(m["I"], 8, v), -1, 1),
    ("q_bool", "Q0.0", "BOOL", lambda m, v: su.set_bool(m["Q"], 0, 0, v), True, False),
    ("a_bool", "A0.1", "BOOL", lambda m, v: su.set_bool(m["Q"], 0, 1, v), True, True),
    ("q_byte", "AB1", "USINT", lambda m, v: su.set_usint(m["Q"], 1, v), 255, 254),
    ("q_word", "QW4", "WORD", lambda m, v: su.set_word(m["Q"], 4, v), 4, 5),
    ("a_word", "AW6", "INT", lambda m, v: su.set_int(m["Q"], 6, v), -6, 6),
    ("q_dword", "QD8", "UDINT", lambda m, v: su.set_udint(m["Q"], 8, v), 8, 9),
]


async def test_every_address_form_and_data_type_reads_what_the_plc_holds(plc):
    driver = S7Driver(device(plc.port), [tag(n, a, t) for n, a, t, *_ in FORMS])
    await driver.connect()
    try:
        for round_ in (0, 1):
            for _, _, _, setter, *values in FORMS:
                setter(plc.memory, values[round_])
            samples = {s.tag: s for s in await driver.read()}
            assert [s.quality for s in samples.values()] == [Quality.GOOD] * len(FORMS)
            got = {n: samples[n].value for n, *_ in FORMS}
            assert got == {n: values[round_] for n, _, _, _, *values in FORMS}
        # DB1, M, I and Q: four items of one multi-variable read per poll
        assert len(driver.plan) == 1 and len(driver.plan[0].items) == 4
        assert plc.read_jobs == 2
        assert driver.health.requests == 2
    finally:
        await driver.close()


def scattered_tags():
    """45 REALs 100 bytes apart in DB1 (45 items) and 75 contiguous REALs in each of DB2..DB4 (300 bytes each)."""
    tags = [tag(f"s{i}", f"DB1.DBD{100 * i}", "REAL") for i in range(45)]
    tags += [tag(f"b{db}_{i}", f"DB{db}.DBD{4 * i}", "REAL") for db in (2, 3, 4) for i in range(75)]
    return tags


@pytest.mark.parametrize("pdu_limit", [480, 240])
async def test_requests_per_poll_counted_at_the_server_match_the_plan(pdu_limit):
    extra = {f"DB{db}": (SrvArea.DB, db, 300) for db in (2, 3, 4)}
    p = Plc(extra, pdu_limit=pdu_limit)
    p.layout["DB1"] = (SrvArea.DB, 1, 4500)
    p.memory["DB1"] = bytearray(4500)
    p.start()
    tags = scattered_tags()
    for i in range(45):
        su.set_real(p.memory["DB1"], 100 * i, i + 0.5)
    for db in (2, 3, 4):
        for i in range(75):
            su.set_real(p.memory[f"DB{db}"], 4 * i, db * 1000 + i)
    driver = S7Driver(device(p.port), tags)  # asks for a 480-byte PDU
    await driver.connect()
    try:
        assert driver.pdu_size == pdu_limit  # what the server granted is what the plan uses
        assert driver.read_plan.pdu_size == pdu_limit
        before = p.read_jobs
        for _ in range(3):
            samples = {s.tag: s.value for s in await driver.read()}
        assert p.read_jobs - before == 3 * len(driver.plan)
        assert samples == {t.name: (int(t.name[1:]) + 0.5 if t.name.startswith("s") else
                                    int(t.name[1]) * 1000 + int(t.name.split("_")[1])) for t in tags}
        # 48 ranges: 3 requests of 20 items at PDU 480; at 240 the bytes bind (5.7 PDUs of data)
        assert len(driver.plan) == {480: 3, 240: 6}[pdu_limit]
        assert len(driver.plan) == lower_bound(driver.read_plan)
        # without multi-variable reads and merging this would be 270 requests per poll
    finally:
        await driver.close()
        p.stop()


async def test_a_tiny_pdu_chunks_a_long_string_and_still_reads_everything():
    p = Plc(pdu_limit=64)  # 46 bytes of payload per item, 4 items per request
    p.start()
    tags = [tag("text", "DB1.DBB0", "STRING[60]"), *(tag(f"w{i}", f"MW{10 * i}", "INT") for i in range(6))]
    su.set_string(p.memory["DB1"], 0, "x" * 50 + "0123456789", 60)
    for i in range(6):
        su.set_int(p.memory["M"], 10 * i, -i)
    driver = S7Driver(device(p.port), tags)
    await driver.connect()
    try:
        assert driver.pdu_size == 64
        values = {s.tag: s.value for s in await driver.read()}
        assert values == {"text": "x" * 50 + "0123456789", **{f"w{i}": -i for i in range(6)}}
        items = [i for r in driver.plan for i in r.items]
        assert sorted((i.start, i.size) for i in items if i.area == "DB") == [(0, 46), (46, 16)]
        assert all(r.request_bytes <= 64 and r.response_bytes <= 64 for r in driver.plan)
        # the 46-byte chunk fills a request alone; the 16-byte rest, MW0..MW40 (merged) and MW50 need two more
        assert p.read_jobs == len(driver.plan) == 3
    finally:
        await driver.close()
        p.stop()


async def test_server_restart_is_survived(plc):
    tags = [tag("count", "DB1.DBD0", "UDINT"), tag("run", "M0.0", "BOOL")]
    driver = S7Driver(device(plc.port), tags)
    su.set_udint(plc.memory["DB1"], 0, 41)
    await driver.connect()
    assert [s.value for s in await driver.read()] == [41, False]

    plc.stop()  # the PLC is switched off: the connection drops
    with pytest.raises(ConnectionLost):
        await driver.read()
    await driver.close()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await driver.connect()
    assert time.monotonic() - t0 < 1.5  # refused quickly, never hangs

    su.set_udint(plc.memory["DB1"], 0, 42)
    su.set_bool(plc.memory["M"], 0, 0, True)
    plc.start()  # same port
    await driver.connect()
    try:
        assert [s.value for s in await driver.read()] == [42, True]
    finally:
        await driver.close()


async def test_sampler_reconnects_with_backoff_and_values_resume(plc):
    from edge_agent.model import DeviceStatus
    from edge_agent.sampling import Backoff, run_device

    driver = S7Driver(device(plc.port, poll_interval=0.05), [tag("count", "DB1.DBW0", "INT")])
    seen: list = []

    async def emit(batch):
        seen.extend(batch)

    su.set_int(plc.memory["DB1"], 0, 1)
    task = asyncio.create_task(run_device(driver, emit, backoff=Backoff(base=0.05, cap=0.2)))
    try:
        await _until(lambda: any(getattr(s, "value", None) == 1 for s in seen))
        plc.stop()
        await _until(lambda: any(isinstance(s, DeviceStatus) and not s.connected for s in seen))
        await asyncio.sleep(0.3)  # a few failed reconnects
        su.set_int(plc.memory["DB1"], 0, 2)
        plc.start()
        await _until(lambda: any(getattr(s, "value", None) == 2 for s in seen), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    statuses = [s.connected for s in seen if isinstance(s, DeviceStatus)]
    assert statuses[0] is True and False in statuses and statuses[-1] is True


async def test_a_missing_db_is_bad_for_its_tags_only(plc):
    tags = [tag("ok_db", "DB1.DBW0", "INT"), tag("missing", "DB7.DBW0", "INT"), tag("missing2", "DB7.DBX4.0", "BOOL"),
            tag("ok_m", "MW2", "INT")]
    su.set_int(plc.memory["DB1"], 0, 11)
    su.set_int(plc.memory["M"], 2, 22)
    driver = S7Driver(device(plc.port), tags)
    await driver.connect()
    try:
        samples = {s.tag: s for s in await driver.read()}
    finally:
        await driver.close()
    assert (samples["ok_db"].value, samples["ok_m"].value) == (11, 22)
    assert samples["ok_db"].quality == samples["ok_m"].quality == Quality.GOOD
    for name, address in (("missing", "DB7.DBW0"), ("missing2", "DB7.DBX4.0")):
        s = samples[name]
        assert s.quality == Quality.BAD and s.value is None
        assert s.error.startswith(f"{name} ({address}): DB7 does not exist in the PLC"), s.error
    assert plc.read_jobs == 1  # one multi-read; the bad DB costs nothing extra


async def test_out_of_range_inside_a_merged_read_blanks_only_the_bad_tag(plc):
    # DB1 has 64 bytes. DBD64 is beyond it but merged (gaps 18 and 2 <= 32) with DBW40 and DBW60 into one item
    tags = [tag("first", "DB1.DBW40", "INT"), tag("last_ok", "DB1.DBW60", "INT"), tag("beyond", "DB1.DBD64", "DINT")]
    su.set_int(plc.memory["DB1"], 40, 1)
    su.set_int(plc.memory["DB1"], 60, 60)
    driver = S7Driver(device(plc.port), tags)
    await driver.connect()
    try:
        assert [(i.start, i.size) for i in driver.plan[0].items] == [(40, 28)]
        for poll in range(3):
            su.set_int(plc.memory["DB1"], 60, 60 + poll)
            samples = {s.tag: s for s in await driver.read()}
            assert (samples["first"].value, samples["last_ok"].value) == (1, 60 + poll)
            assert samples["beyond"].quality == Quality.BAD
            assert samples["beyond"].error.startswith("beyond (DB1.DBD64): DB1 bytes 64..67 are out of range")
            assert "Optimized block access" in samples["beyond"].error
        # poll 1: the merged read, then the three tags alone in one multi-read; from then on the refused
        # tag has its own item and the rest stays merged: one request per poll
        assert [(i.start, i.size) for i in driver.plan[0].items] == [(40, 22), (64, 4)]
        assert plc.read_jobs == 2 + 1 + 1
    finally:
        await driver.close()


class RejectingServer(S7Server):
    """Answers read jobs with header error 0x8104, as an S7-1200/1500 without PUT/GET permission."""

    reject = True

    def _handle_read_area(self, request, client_address):
        if self.reject:
            return self._build_error_response(request, 0x8104)
        return super()._handle_read_area(request, client_address)


async def test_put_get_not_permitted_is_reported_per_tag_and_recovers_without_reconnect():
    server = RejectingServer()
    db = bytearray(8)
    server.register_area(SrvArea.DB, 1, db)
    server.start_to("127.0.0.1", 0)
    su.set_int(db, 0, 5)
    driver = S7Driver(device(server.bound_port), [tag("a", "DB1.DBW0", "INT"), tag("b", "DB1.DBW2", "INT")])
    await driver.connect()
    try:
        samples = await driver.read()
        assert [s.quality for s in samples] == [Quality.BAD, Quality.BAD]
        assert samples[0].error.startswith("a (DB1.DBW0): the PLC rejected the read")
        assert "PUT/GET" in samples[0].error and "0x8104" in samples[0].error
        server.reject = False
        assert [s.value for s in await driver.read()] == [5, 0]
    finally:
        await driver.close()
        server.stop()


async def test_cpu_in_stop_makes_every_tag_bad_until_it_runs_again(plc):
    su.set_int(plc.memory["DB1"], 0, 7)
    driver = S7Driver(device(plc.port, cpu_state_interval=0.05), [tag("a", "DB1.DBW0", "INT"), tag("b", "I0.0", "BOOL")])
    await driver.connect()
    try:
        assert [s.value for s in await driver.read()] == [7, False]
        assert driver.cpu_state == "RUN"
        plc.server.set_cpu_status(4)  # STOP
        await asyncio.sleep(0.06)
        jobs = plc.read_jobs
        samples = await driver.read()
        assert [s.quality for s in samples] == [Quality.BAD, Quality.BAD]
        assert samples[0].error == "a (DB1.DBW0): PLC plc is in STOP: values are frozen"
        assert plc.read_jobs == jobs  # nothing read while stopped
        plc.server.set_cpu_status(8)  # RUN: checked on the very next poll
        assert [s.value for s in await driver.read()] == [7, False]
    finally:
        await driver.close()


async def test_remote_tsap_replaces_rack_and_slot(plc):
    driver = S7Driver(device(plc.port, remote_tsap="03.02", local_tsap=0x1000), [tag("a", "DB1.DBW0", "INT")])
    await driver.connect()
    try:
        assert (driver._client.remote_tsap, driver._client.local_tsap) == (0x0302, 0x1000)
        assert [s.quality for s in await driver.read()] == [Quality.GOOD]
    finally:
        await driver.close()


async def test_the_pdu_size_asked_for_is_negotiated(plc):
    driver = S7Driver(device(plc.port, pdu_size=240), [tag("a", "DB1.DBW0", "INT")])
    await driver.connect()
    try:
        assert driver.pdu_size == driver.read_plan.pdu_size == 240
    finally:
        await driver.close()


async def test_a_plc_without_the_cpu_state_list_is_read_without_the_check():
    import snap7

    server = snap7.server.Server(log=False)  # the stock server has no SZL 0x0424
    db = bytearray(4)
    server.register_area(SrvArea.DB, 1, db)
    server.start_to("127.0.0.1", 0)
    su.set_int(db, 0, 3)
    driver = S7Driver(device(server.server_socket.getsockname()[1], cpu_state_interval=0.01),
                      [tag("a", "DB1.DBW0", "INT")])
    await driver.connect()
    try:
        for _ in range(3):
            assert [s.value for s in await driver.read()] == [3]
            await asyncio.sleep(0.02)
        assert driver.cpu_state is None and driver._state_supported is False
        assert driver.health.requests == 4  # one failed state request, then reads only
    finally:
        await driver.close()
        server.stop()


async def test_a_peer_that_never_answers_times_out():
    writers = []

    async def silent(reader, writer):  # accepts TCP, never answers the ISO handshake
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    driver = S7Driver(device(port, timeout=0.3), [tag("a", "DB1.DBW0", "INT")])
    t0 = time.monotonic()
    try:
        with pytest.raises(ConnectionLost, match="no answer"):
            await driver.connect()
        assert time.monotonic() - t0 < 1.0
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("options", "calling", "called", "where"),
    [
        ({"slot": 3}, 0x0100, 0x0103, "rack 0, slot 3"),  # PG connection: 0x01 << 8 | rack << 5 | slot
        ({"rack": 1, "slot": 2, "connection_type": "OP"}, 0x0100, 0x0222, "rack 1, slot 2"),
        ({"remote_tsap": "03.01", "local_tsap": "10.00"}, 0x1000, 0x0301, "TSAP 0301"),
    ],
)
async def test_tsaps_on_the_wire_and_a_refused_handshake_hints_at_rack_and_slot(options, calling, called, where):
    requests = []

    async def refuse(reader, writer):  # records the COTP connection request, then closes like a CPU
        tpkt = await reader.readexactly(4)  # that is asked for a rack/slot it does not have
        requests.append(await reader.readexactly(int.from_bytes(tpkt[2:4], "big") - 4))
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    driver = S7Driver(device(server.sockets[0].getsockname()[1], **options), [tag("a", "DB1.DBW0", "INT")])
    try:
        with pytest.raises(ConnectionLost, match=rf"\({where}\).*check rack/slot \(or TSAP\)"):
            await driver.connect()
    finally:
        server.close()
        await server.wait_closed()
    cr = requests[0]
    assert cr[1] == 0xE0  # COTP connection request
    params, i = {}, 7
    while i < len(cr):
        params[cr[i]] = cr[i + 2:i + 2 + cr[i + 1]]
        i += 2 + cr[i + 1]
    assert int.from_bytes(params[0xC1], "big") == calling  # calling TSAP (ours)
    assert int.from_bytes(params[0xC2], "big") == called  # called TSAP (the PLC's)


async def test_nothing_listening_is_connection_lost():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = S7Driver(device(port), [tag("a", "DB1.DBW0", "INT")])
    with pytest.raises(ConnectionLost, match=f"cannot connect to 127.0.0.1:{port} \\(rack 0, slot 1\\)"):
        await driver.connect()
    with pytest.raises(ConnectionLost, match="not connected"):
        await driver.read()


async def _until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_a_plc_that_stops_answering_mid_session_is_connection_lost_within_the_timeout(plc):
    """A relay between the driver and a real S7 server goes quiet after connect: the read must end."""
    quiet = asyncio.Event()
    links = []

    async def relay(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", plc.port)
        links.extend([client_w, server_w])

        async def pump(r, w, to_client):
            while data := await r.read(4096):
                if to_client and quiet.is_set():
                    continue  # the PLC "hangs": its answers never arrive
                w.write(data)
                await w.drain()

        await asyncio.gather(pump(client_r, server_w, False), pump(server_r, client_w, True),
                             return_exceptions=True)

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    driver = S7Driver(device(proxy.sockets[0].getsockname()[1], timeout=0.3), [tag("a", "DB1.DBW0", "INT")])
    try:
        await driver.connect()
        assert [s.quality for s in await driver.read()] == [Quality.GOOD]
        quiet.set()
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost, match=r"no answer to a read within 0.3s"):
            await driver.read()
        assert time.monotonic() - t0 < 1.0
    finally:
        await driver.close()
        for w in links:
            w.close()
        proxy.close()
        await proxy.wait_closed()
