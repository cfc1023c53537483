"""Chaos: 20 random SIGKILLs of the agent while the machine produces and the agent publishes.

Every part produced arrives (counted once after dropping duplicates by event_id), a
duplicate is the same event, seq is gap-free, and the SQLite file passes integrity_check.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time

from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from delivery_support import check_complete, start_simulator

KILLS = 20


async def test_twenty_random_sigkills_lose_nothing(tmp_path, broker, agent_factory):
    rng = random.Random(20261122)
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    config = write_config(tmp_path / "agent.yaml", cfg)
    async with Collector(broker.port) as c:
        agent = agent_factory(config)
        agent.start()
        await c.wait_for(lambda: c.events("state"), 15, "the first state event")
        clock.run()
        started = time.monotonic()
        delivered_between = []
        for i in range(KILLS):
            before = len(c.events())
            if i % 4 == 3:  # now and then during start-up (opening the buffer, connecting)
                await asyncio.sleep(rng.uniform(0.1, 1.0))
            else:  # mostly once this agent publishes, at a random moment
                await c.wait_for(lambda n=before: len(c.events()) > n, 20, f"agent {i} publishing")
                await asyncio.sleep(rng.uniform(0.0, 1.0))
            agent.kill()
            delivered_between.append(len(c.events()) - before)
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # the machine goes on while no agent runs
            agent = agent_factory(config)
            agent.start()
        await asyncio.sleep(3.0)
        clock.freeze()
        await c.wait_for(lambda: sum(e["count"] for e in {x["event_id"]: x for x in c.events()}.values()
                                     if e["type"] == "count") >= machine.total, 60, f"{machine.total} parts")
        await asyncio.sleep(1.0)  # duplicates still in flight would show up now
        uniq = check_complete(c.events(), machine.total)
        dups = len(c.events()) - len(uniq)
    agent.stop()
    sim.cancel()
    con = sqlite3.connect(tmp_path / "buffer.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert sum(1 for n in delivered_between if n > 0) >= KILLS * 3 // 4, "kills must hit an agent that was publishing"
    print(f"{KILLS} kills in {time.monotonic() - started:.0f}s: {machine.total} parts, {len(uniq)} events, "
          f"{dups} duplicates (same event_id)")
