"""Modbus driver against a real pymodbus TCP server on loopback: byte orders, scaling, strings,
bits, 1-based addressing, several units, exception isolation. Register words are set on the
wire (`frontend.raw`) from hand-written vectors, not through the driver's own codecs."""

from __future__ import annotations

import asyncio
import math

import pytest

from edge_agent.errors import ConnectionLost
from edge_agent.model import Quality
from modbus_support import make_config, poll, served, tcp_device

WORDS = {  # order -> words of float32 123.456, uint32 0x01020304, int32 -2, uint64 0x0102..08, int64 -2, float64 1.0
    "ABCD": ([0x42F6, 0xE979], [0x0102, 0x0304], [0xFFFF, 0xFFFE], [0x0102, 0x0304, 0x0506, 0x0708],
             [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], [0x3FF0, 0, 0, 0]),
    "CDAB": ([0xE979, 0x42F6], [0x0304, 0x0102], [0xFFFE, 0xFFFF], [0x0708, 0x0506, 0x0304, 0x0102],
             [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], [0, 0, 0, 0x3FF0]),
    "BADC": ([0xF642, 0x79E9], [0x0201, 0x0403], [0xFFFF, 0xFEFF], [0x0201, 0x0403, 0x0605, 0x0807],
             [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], [0xF03F, 0, 0, 0]),
    "DCBA": ([0x79E9, 0xF642], [0x0403, 0x0201], [0xFEFF, 0xFFFF], [0x0807, 0x0605, 0x0403, 0x0201],
             [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], [0, 0, 0, 0xF03F]),
}
NUMERIC_TAGS = [("f32", 0, "float32"), ("u32", 2, "uint32"), ("i32", 4, "int32"),
                ("u64", 10, "uint64"), ("i64", 14, "int64"), ("f64", 20, "float64")]


def set_words(frontend, start: int, words: list[int], table: str = "hr", unit: int | None = None) -> None:
    for i, w in enumerate(words):
        frontend.raw[(table, start + i) if unit is None else (unit, table, start + i)] = w


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
async def test_32_and_64_bit_values_in_every_byte_order(order):
    cfg = make_config(tcp_device(byte_order=order),
                      [{"name": n, "address": f"hr:{a}", "type": t} for n, a, t in NUMERIC_TAGS])
    async with served(cfg) as (frontend, driver):
        for (_, start, _), words in zip(NUMERIC_TAGS, WORDS[order]):
            set_words(frontend, start, words)
        samples, requests = await poll(frontend, driver)
    assert requests == 1  # all six values in one coalesced request
    assert all(s.quality == Quality.GOOD for s in samples.values())
    assert math.isclose(samples["f32"].value, 123.456, rel_tol=1e-7)
    assert samples["u32"].value == 0x01020304
    assert samples["i32"].value == -2
    assert samples["u64"].value == 0x0102030405060708
    assert samples["i64"].value == -2
    assert samples["f64"].value == 1.0


async def test_scaling_gain_and_offset_with_engineering_units():
    cfg = make_config(tcp_device(), [
        {"name": "temp", "address": "hr:0", "type": "int16", "unit": "°C", "scale": {"gain": 0.1, "offset": -5}},
        {"name": "speed", "address": "hr:1", "type": "uint16", "unit": "rpm", "scale": {"gain": 2}},
        {"name": "flow", "address": "hr:2", "type": "float32", "unit": "l/min", "scale": {"offset": 1.5}},
        {"name": "raw", "address": "hr:4", "type": "uint16"},
        {"name": "flag", "address": "hr:5.0", "type": "bool", "scale": {"gain": 10}},
    ])
    async with served(cfg) as (frontend, driver):
        set_words(frontend, 0, [0xFF9C, 1500, 0x42F6, 0xE979, 42, 1])  # -100, 1500, 123.456, 42, bit 0
        samples, _ = await poll(frontend, driver)
    assert samples["temp"].value == pytest.approx(-15.0)  # -100 * 0.1 - 5
    assert samples["speed"].value == 3000
    assert samples["flow"].value == pytest.approx(124.956, rel=1e-6)
    assert samples["raw"].value == 42
    assert samples["flag"].value is True  # bools are not scaled
    assert {t.name: t.unit for t in cfg.tags} == {"temp": "°C", "speed": "rpm", "flow": "l/min", "raw": None,
                                                 "flag": None}


@pytest.mark.parametrize("order, words", [
    ("ABCD", [0x5052, 0x4553, 0x532D, 0x3031, 0x0000]),  # "PRESS-01", NUL padded
    ("BADC", [0x5250, 0x5345, 0x2D53, 0x3130, 0x2020]),  # bytes swapped in each register, space padded
])
async def test_strings(order, words):
    cfg = make_config(tcp_device(byte_order=order), [
        {"name": "id", "address": "hr:100", "type": "string[10]"},
        {"name": "short", "address": "hr:100", "type": "string[3]"},
    ])
    async with served(cfg) as (frontend, driver):
        set_words(frontend, 100, words)
        samples, _ = await poll(frontend, driver)
    assert samples["id"].value == "PRESS-01"
    assert samples["short"].value == "PRE"


async def test_bits_in_a_register_take_one_request():
    cfg = make_config(tcp_device(), [
        *({"name": f"b{i}", "address": f"hr:9.{i}", "type": "bool"} for i in range(16)),
        {"name": "word", "address": "hr:9", "type": "uint16"},
        {"name": "ir_bit", "address": "ir:3.7", "type": "bool"},
    ])
    async with served(cfg) as (frontend, driver):
        set_words(frontend, 9, [0b1000_0000_0000_1001])
        set_words(frontend, 3, [0x0080], table="ir")
        samples, requests = await poll(frontend, driver)
    assert {i for i in range(16) if samples[f"b{i}"].value} == {0, 3, 15}
    assert all(samples[f"b{i}"].value is False for i in (1, 2, 4, 14))
    assert samples["word"].value == 0x8009
    assert samples["ir_bit"].value is True
    assert requests == 2  # one hr register, one ir register


async def test_modicon_one_based_addressing_end_to_end():
    cfg = make_config(tcp_device(addressing="modicon"), [
        {"name": "hr1", "address": "40001", "type": "uint16"},
        {"name": "hr100", "address": "400100", "type": "uint16"},
        {"name": "hr_prefixed", "address": "hr:2", "type": "uint16"},
        {"name": "ir5", "address": "30005", "type": "int16"},
        {"name": "coil3", "address": "00003", "type": "bool"},
        {"name": "di2", "address": "10002", "type": "bool"},
        {"name": "bit", "address": "40010.3", "type": "bool"},
    ])
    async with served(cfg) as (frontend, driver):
        frontend.raw.update({("hr", 0): 11, ("hr", 1): 22, ("hr", 99): 100, ("ir", 4): 0xFFFB, ("coil", 2): True,
                             ("di", 1): True, ("hr", 9): 0b1000})
        # neighbours that a one-off error would read instead
        frontend.raw.update({("hr", 100): 999, ("ir", 5): 999, ("coil", 3): False, ("di", 2): False})
        samples, requests = await poll(frontend, driver)
    assert {n: s.value for n, s in samples.items()} == {
        "hr1": 11, "hr100": 100, "hr_prefixed": 22, "ir5": -5, "coil3": True, "di2": True, "bit": True}
    assert requests == len(driver.plan) == 4


async def test_several_units_on_one_connection_and_a_missing_unit():
    cfg = make_config(tcp_device(unit=1, timeout="300ms"), [
        {"name": "u1", "address": "hr:0", "type": "uint16"},
        {"name": "u2", "address": "hr:0@2", "type": "uint16"},
        {"name": "u2b", "address": "hr:1@2", "type": "uint16"},
        {"name": "u3", "address": "hr:0@3", "type": "uint16"},
    ])
    served_tags = [t for t in cfg.tags if t.name != "u3"]  # nobody answers for unit 3
    async with served(cfg, server_tags=served_tags) as (frontend, driver):
        frontend.raw.update({(1, "hr", 0): 111, (2, "hr", 0): 222, (2, "hr", 1): 223})
        samples, requests = await poll(frontend, driver)
    assert (samples["u1"].value, samples["u2"].value, samples["u2b"].value) == (111, 222, 223)
    assert samples["u3"].quality == Quality.BAD
    assert samples["u3"].error.startswith("unit 3 did not answer within 0.3s")
    assert requests == 2 and frontend.unanswered == 1  # unit 3's request got no answer


async def test_the_polls_backstop_timeout_makes_a_silent_unit_bad_and_the_poll_goes_on():
    """pymodbus' own timeout is lifted, so only the driver's backstop (timeout + 1 to + 2 s) ends the wait
    for unit 2, which nobody answers; unit 3, planned after it, is still read in the same poll."""
    cfg = make_config(tcp_device(unit=1, timeout="200ms"), [
        {"name": "u1", "address": "hr:0", "type": "uint16"},
        {"name": "u2", "address": "hr:0@2", "type": "uint16"},
        {"name": "u3", "address": "hr:0@3", "type": "uint16"},
    ])
    served_tags = [t for t in cfg.tags if t.name != "u2"]
    async with served(cfg, server_tags=served_tags) as (frontend, driver):
        frontend.raw.update({(1, "hr", 0): 111, (3, "hr", 0): 333})
        driver._client.ctx.comm_params.timeout_connect = 30  # pymodbus would wait 30 s
        loop = asyncio.get_running_loop()
        started = loop.time()
        samples, requests = await poll(frontend, driver)
        took = loop.time() - started
        assert 1.2 <= took <= 2.5, took
        assert (samples["u1"].value, samples["u3"].value) == (111, 333)
        assert samples["u2"].quality == Quality.BAD
        assert samples["u2"].error.startswith("unit 2 did not answer within 0.2s (hr:0+1 unit 2)")
        assert requests == 2 and frontend.unanswered == 1  # the server counts answered requests
        frontend.raw[(1, "hr", 0)] = 112  # the connection is still usable
        driver._client.ctx.comm_params.timeout_connect = 0.2
        samples, _ = await poll(frontend, driver)
        assert samples["u1"].value == 112 and samples["u2"].quality == Quality.BAD


async def test_exception_isolates_the_bad_tag_and_is_remembered():
    cfg = make_config(tcp_device(bad_tag_retry="300ms"),
                      [{"name": f"t{i}", "address": f"hr:{i}", "type": "uint16"} for i in range(10)])
    async with served(cfg) as (frontend, driver):
        for i in range(10):
            frontend.raw[("hr", i)] = 100 + i
        frontend.invalid.add(("hr", 5))
        assert len(driver.plan) == 1

        samples, first = await poll(frontend, driver)
        assert samples["t5"].quality == Quality.BAD
        assert samples["t5"].value is None
        assert "t5" in samples["t5"].error and "illegal data address" in samples["t5"].error
        assert {n: s.value for n, s in samples.items() if n != "t5"} == {f"t{i}": 100 + i for i in range(10) if i != 5}
        assert first <= 1 + 2 * 4  # the block, then halves down to the culprit (log2 of 10 spans)
        assert driver.bad_tags.keys() == {"t5"}

        # later polls: the rest in two requests around the bad register, the bad tag not re-read
        for _ in range(2):
            samples, requests = await poll(frontend, driver)
            assert requests == 2
            assert samples["t5"].quality == Quality.BAD and "illegal data address" in samples["t5"].error
            assert all(samples[f"t{i}"].quality == Quality.GOOD for i in range(10) if i != 5)

        # after bad_tag_retry it is tried again (still bad: 3 requests), then not again at once
        await asyncio.sleep(0.35)
        _, requests = await poll(frontend, driver)
        assert requests == 3
        _, requests = await poll(frontend, driver)
        assert requests == 2

        # the device is fixed: the next retry succeeds and the plan merges back into one request
        frontend.invalid.clear()
        await asyncio.sleep(0.35)
        samples, requests = await poll(frontend, driver)
        assert requests == 3 and samples["t5"].value == 105 and samples["t5"].quality == Quality.GOOD
        assert driver.bad_tags == {}
        samples, requests = await poll(frontend, driver)
        assert requests == 1 and all(s.quality == Quality.GOOD for s in samples.values())


async def test_an_unreadable_gap_between_tags_is_learned_once():
    cfg = make_config(tcp_device(), [{"name": "a", "address": "hr:0", "type": "uint32"},
                                     {"name": "b", "address": "hr:10", "type": "uint16"}])
    async with served(cfg) as (frontend, driver):
        frontend.raw.update({("hr", 1): 7, ("hr", 10): 8})
        frontend.invalid.add(("hr", 5))  # no tag there, but a merged read touches it
        samples, first = await poll(frontend, driver)
        assert (samples["a"].value, samples["b"].value) == (7, 8)
        assert first == 3  # the merged read, then each half
        for _ in range(2):
            samples, requests = await poll(frontend, driver)
            assert requests == 2 and all(s.quality == Quality.GOOD for s in samples.values())
        assert driver.bad_tags == {}


async def test_two_bad_tags_in_one_block():
    cfg = make_config(tcp_device(), [{"name": f"t{i}", "address": f"hr:{i * 2}", "type": "uint16"} for i in range(8)])
    async with served(cfg) as (frontend, driver):
        frontend.invalid.update({("hr", 2), ("hr", 12)})
        samples, _ = await poll(frontend, driver)
        assert {n for n, s in samples.items() if s.quality == Quality.BAD} == {"t1", "t6"}
        _, requests = await poll(frontend, driver)
        assert requests == 3  # t0 | t2..t5 | t7 around the two bad registers


async def test_stopped_server_raises_connection_lost():
    cfg = make_config(tcp_device(timeout="300ms"), [{"name": "a", "address": "hr:0", "type": "uint16"}])
    async with served(cfg) as (frontend, driver):
        await poll(frontend, driver)
        await frontend.stop()
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(3):
                await driver.read()


async def test_a_device_answering_fewer_registers_than_asked_makes_that_request_bad():
    """A device (here a minimal Modbus TCP server on a real socket) that answers FC 3 with one
    register short: the request's tags are BAD and say so, the other requests still read."""
    import struct

    from drivers.modbus.driver import ModbusDriver

    async def handle(reader, writer):
        try:
            while True:
                tid, _, _, unit, fc, start, count = struct.unpack(">HHHBBHH", await reader.readexactly(12))
                n = count - 1 if fc == 3 else count  # holding registers: one short; input registers: all
                pdu = struct.pack(">BB", fc, 2 * n) + struct.pack(f">{n}H", *range(start, start + n))
                writer.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = make_config(tcp_device(port=port, timeout="500ms"), [
        {"name": "a", "address": "hr:10", "type": "uint16"}, {"name": "b", "address": "hr:11", "type": "uint16"},
        {"name": "c", "address": "ir:20", "type": "uint16"}, {"name": "d", "address": "ir:21", "type": "uint16"},
    ])
    driver = ModbusDriver(cfg.devices[0], cfg.tags)
    try:
        await driver.connect()
        samples = {s.tag: s for s in await driver.read()}
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
    assert samples["a"].quality == samples["b"].quality == Quality.BAD
    assert samples["a"].error == "unit 1 answered 1 of 2 registers (hr:10+2 unit 1)"
    assert (samples["c"].value, samples["d"].value) == (20, 21)
