"""Requests per poll cycle for a scattered map, counted at the server, vs the planner's minimum.

Modbus: the hand-checked scattered map of tests/test_coalescing.py (minimum 8) and a
seeded random map of 300 tags; the minimum is computed here independently (per unit and
table, greedy cover of the tags' register spans by 125-register / 2000-bit windows, which
is optimal for intervals on a line). S7: a seeded scattered map over three DBs at PDU 480
and 240; the count must equal the planner's plan, and is shown next to a lower bound
(items / 20 per request, bytes / response budget). The driver runs in this process
against a server process that counts read requests (Modbus PDUs, S7 read jobs).
"""

from __future__ import annotations

import asyncio
import math
import random

import yaml

from bench.common import Figure, Settings, log, server

# tests/test_coalescing.py: hr {0-1, 10, 100-101, 124} | 125 | {300, 420}; ir 5; coils {0, 1999} | 2000 | 5000; di 3
SCATTERED = [
    ("hr:0", "uint32"), ("hr:10", "int16"), ("hr:100", "float32"), ("hr:124", "uint16"), ("hr:125", "uint16"),
    ("hr:300", "int32"), ("hr:420", "uint16"), ("ir:5", "int16"),
    ("coil:0", "bool"), ("coil:1999", "bool"), ("coil:2000", "bool"), ("coil:5000", "bool"), ("di:3", "bool"),
]
WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


def random_modbus(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out, used = [], set()
    while len(out) < n:
        table = rng.choice(["hr", "hr", "hr", "ir", "coil", "di"])
        t = "bool" if table in ("coil", "di") else rng.choice(["int16", "uint16", "int32", "float32", "float64"])
        number = rng.randrange(0, 6000)
        if (table, number) not in used:
            used.add((table, number))
            out.append((f"{table}:{number}", t))
    return out


def independent_minimum(tags: list[tuple[str, str]]) -> int:
    groups: dict[str, list[tuple[int, int]]] = {}
    for address, t in tags:
        table, number = address.split(":")
        groups.setdefault(table, []).append((int(number), int(number) + WIDTH[t]))
    total = 0
    for table, spans in groups.items():
        limit = 2000 if table in ("coil", "di") else 125
        start = end = None
        for lo, hi in sorted(spans):
            if start is not None and max(end, hi) - start <= limit:
                end = max(end, hi)
                continue
            total, start, end = total + 1, lo, hi
    return total


def modbus_config(port: int, tags: list[tuple[str, str]]):
    from edge_agent.config import parse_config

    return parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"}, "machines": [{"id": "m"}],
        "devices": [{"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port}],
        "tags": [{"name": f"t{i}", "device": "plc", "address": a, "type": t} for i, (a, t) in enumerate(tags)],
    }))


async def count_modbus(port: int, srv, tags) -> tuple[list[int], int]:
    from drivers.modbus.driver import ModbusDriver

    cfg = modbus_config(port, tags)
    driver = ModbusDriver(cfg.devices[0], cfg.tags)
    await driver.connect()
    counts = []
    try:
        for _ in range(3):
            before = srv.ask("stats")["requests"]
            samples = await driver.read()
            assert all(s.quality == "good" for s in samples), [s for s in samples if s.quality != "good"][:3]
            counts.append(srv.ask("stats")["requests"] - before)
    finally:
        await driver.close()
    return counts, len(driver.plan)


def random_s7(n: int, seed: int = 11) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out, used = [], set()
    sizes = {"INT": 2, "DINT": 4, "REAL": 4, "LREAL": 8, "BOOL": 1}
    while len(out) < n:
        db = rng.choice([1, 2, 3])
        t = rng.choice(list(sizes))
        byte = rng.randrange(0, 3000)
        if t != "BOOL":
            byte -= byte % 2
        if any((db, b) in used for b in range(byte, byte + sizes[t])):
            continue
        used.update((db, b) for b in range(byte, byte + sizes[t]))
        letter = {1: "X", 2: "W", 4: "D", 8: "D"}[sizes[t]]
        address = f"DB{db}.DBX{byte}.{rng.randrange(8)}" if t == "BOOL" else \
            f"DB{db}.DBB{byte}" if t == "LREAL" else f"DB{db}.DB{letter}{byte}"
        out.append((address, t))
    return out


async def count_s7(port: int, srv, tags, pdu: int) -> tuple[list[int], int, int]:
    from drivers.s7.driver import S7Driver
    from drivers.s7.planner import ITEM_HEADER, RESPONSE_HEADER
    from edge_agent.config import parse_config

    cfg = parse_config(yaml.safe_dump({
        "plant": {"site": "s", "area": "a", "line": "l"}, "machines": [{"id": "m"}],
        "devices": [{"name": "plc", "protocol": "s7", "host": "127.0.0.1", "port": port, "pdu_size": pdu,
                     "cpu_state_interval": 0}],
        "tags": [{"name": f"t{i}", "device": "plc", "address": a, "type": t} for i, (a, t) in enumerate(tags)],
    }))
    driver = S7Driver(cfg.devices[0], cfg.tags)
    await driver.connect()
    counts = []
    try:
        for _ in range(3):
            before = srv.ask("stats")["requests"]
            samples = await driver.read()
            bad = [s for s in samples if s.quality != "good"]
            assert not bad, bad[:3]
            counts.append(srv.ask("stats")["requests"] - before)
        p = driver.read_plan
        items = sum(len(r.items) for r in p.requests)
        data = sum(i.size + ITEM_HEADER + 1 for r in p.requests for i in r.items)
        bound = max(math.ceil(items / 20), math.ceil(data / (p.pdu_size - RESPONSE_HEADER)))
        return counts, len(driver.plan), bound
    finally:
        await driver.close()


def run(s: Settings) -> list[Figure]:
    figures = []
    srv = server("modbus", machines=0)
    try:
        for label, tags in (("hand-checked 13 tags", SCATTERED), ("random 300 tags", random_modbus(300))):
            counts, planned = asyncio.run(count_modbus(srv.ready["port"], srv, tags))
            minimum = independent_minimum(tags)
            ok = all(c == planned for c in counts) and planned == minimum
            log(f"planner modbus {label}: counted {counts}, planned {planned}, independent minimum {minimum}")
            figures.append(Figure(f"planner:modbus:{label.split()[0]}", f"Modbus requests per poll, scattered map ({label})",
                                  max(counts), "requests", f"= minimum ({minimum})", ok,
                                  {"counted_per_poll": counts, "planned": planned, "independent_minimum": minimum}))
    finally:
        srv.stop()
    s7_tags = random_s7(120)
    for pdu in (480, 240):
        srv = server("s7", machines=0, dbs={1: 3100, 2: 3100, 3: 3100}, pdu=pdu)
        try:
            counts, planned, bound = asyncio.run(count_s7(srv.ready["port"], srv, s7_tags, pdu))
        finally:
            srv.stop()
        ok = all(c == planned for c in counts)
        log(f"planner s7 pdu {pdu}: counted {counts}, planned {planned}, lower bound {bound}")
        figures.append(Figure(f"planner:s7:{pdu}", f"S7 read jobs per poll, 120 scattered tags, PDU {pdu}", max(counts),
                              "requests", f"= planned ({planned})", ok,
                              {"counted_per_poll": counts, "planned": planned, "lower_bound": bound},
                              note=f"lower bound (items/20, bytes/PDU) {bound}"))
    return figures
