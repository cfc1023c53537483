"""Bare library read loops, each in its own process: `python -m bench.bare KIND '{json options}'`.

The reference the pipeline is compared with: the same requests the agent's planner
makes, sent back to back with the protocol library alone (no samples, no queue, no
derivation, no buffer). Prints `{"ready": true}` once connected, runs for `seconds`
(bounded), then prints `{"polls": n, "seconds": s}` and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def emit(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def modbus(opts: dict[str, Any]) -> int:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=opts["port"], timeout=5, retries=0, reconnect_delay=0)
    await client.connect()
    calls = {"hr": client.read_holding_registers, "ir": client.read_input_registers,
             "coil": client.read_coils, "di": client.read_discrete_inputs}
    plan = [(calls[t], u, s, c) for t, u, s, c in opts["plan"]]
    emit({"ready": True})
    polls, end = 0, time.monotonic() + opts["seconds"]
    while time.monotonic() < end:
        for call, unit, start, count in plan:
            r = await call(start, count=count, device_id=unit)
            if r.isError():
                raise RuntimeError(f"read failed: {r}")
        polls += 1
    client.close()
    return polls


async def s7(opts: dict[str, Any]) -> int:
    from snap7 import AsyncClient
    from snap7.type import Parameter

    client = AsyncClient()
    client.set_connection_type(1)
    client.set_param(Parameter.PDURequest, 480)
    await client.connect("127.0.0.1", 0, 1, opts["port"])
    plan = opts["plan"]  # [(db, start, size)], one item per request
    emit({"ready": True})
    polls, end = 0, time.monotonic() + opts["seconds"]
    while time.monotonic() < end:
        for db, start, size in plan:
            await client.db_read(db, start, size)
        polls += 1
    await client.disconnect()
    return polls


async def opcua(opts: dict[str, Any]) -> int:
    import logging

    from asyncua import Client

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    client = Client(opts["url"], timeout=5)
    await client.connect()
    ns = await client.get_namespace_index(opts["namespace"])
    nodes = [client.get_node(f"ns={ns};s={ident}") for ident in opts["identifiers"]]
    emit({"ready": True})
    polls, end = 0, time.monotonic() + opts["seconds"]
    while time.monotonic() < end:
        await client.read_values(nodes)
        polls += 1
    await client.disconnect()
    return polls


def main() -> None:
    kind, opts = sys.argv[1], json.loads(sys.argv[2])
    t0 = time.monotonic()
    polls = asyncio.run({"modbus": modbus, "s7": s7, "opcua": opcua}[kind](opts))
    emit({"polls": polls, "seconds": time.monotonic() - t0})


if __name__ == "__main__":
    main()
