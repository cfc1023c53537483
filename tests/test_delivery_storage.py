"""Disk full and read-only file system, for real: the buffer survives, counts, keeps events in memory, recovers.

As root (CI, `make test`) the buffer lives on a tiny tmpfs that really fills up (SQLITE_FULL)
and is really remounted read-only (EROFS). Without root, SQLite's own limits provoke the same
result codes: `PRAGMA max_page_count` (SQLITE_FULL) and `PRAGMA query_only` (SQLITE_READONLY).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from buffer import AsyncBuffer, Buffer, NewEvent


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


class SmallFs:
    def __init__(self, root: Path):
        self.dir = root / f"fs-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        self.real = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(self.dir))

    def resize(self, size: str) -> None:
        assert _mount("-o", f"remount,size={size}", str(self.dir))

    def read_only(self, on: bool) -> None:
        assert _mount("-o", f"remount,{'ro' if on else 'rw'}", str(self.dir))

    def close(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path):
    fs = SmallFs(tmp_path)
    yield fs
    fs.close()


def ev(i: int, pad: int = 3000) -> NewEvent:
    return NewEvent("count", 1000.0 + i, "t/m/event/count", {"type": "count", "i": i, "pad": "x" * pad})


def test_disk_full_keeps_events_in_memory_then_commits_them_in_order(small_fs, caplog):
    caplog.set_level(logging.DEBUG, "edge_agent.buffer")
    b = Buffer(small_fs.dir / "b.db", max_bytes=10**9)
    b.register_outputs(["mqtt"])
    if not small_fs.real:
        b._conn.execute(f"PRAGMA max_page_count={b._conn.execute('PRAGMA page_count').fetchone()[0] + 20}")
    n = 0
    while b.metrics.store_errors == 0:
        b.append([ev(n)], state={"m1": {"counter": n}})  # never raises
        n += 1
        assert n < 500, "the small file system never filled up"
    for _ in range(20):  # the agent keeps producing while the disk is full
        b.append([ev(n)], state={"m1": {"counter": n}})
        n += 1
    assert b.metrics.pending_events > 0 and b.metrics.store_errors_by_kind.get("disk_full", 0) >= 1
    assert "event=buffer_store_failed kind=disk_full" in caplog.text
    assert b.state("m1")["counter"] < n - 1, "the state on disk lags: it waits in memory with its events"
    if small_fs.real:
        small_fs.resize("8m")
    else:
        b._conn.execute("PRAGMA max_page_count=1073741823")
    rows = b.retry_pending()
    assert rows and b.metrics.pending_events == 0
    stored = b.read("mqtt", 10_000)
    assert [json.loads(r.payload)["i"] for r in stored] == list(range(n)), "nothing lost, original order"
    assert [r.seq for r in stored] == list(range(1, n + 1)), "seq gap-free"
    assert b.state("m1") == {"counter": n - 1}
    assert b.integrity_check() == "ok"
    assert "event=buffer_recovered" in caplog.text


def test_read_only_mid_run_is_survived_and_acks_are_kept_in_memory(small_fs, caplog):
    """The database turns read-only under an open connection (PRAGMA query_only: SQLITE_READONLY).

    Linux refuses to remount a file system read-only while files on it are open for
    writing, so the real remount is the next test.
    """
    b = Buffer(small_fs.dir / "b.db")
    b.register_outputs(["mqtt"])
    b.append([ev(i, 10) for i in range(3)])
    b._conn.execute("PRAGMA query_only=ON")
    assert b.append([ev(3, 10)]) == []
    assert b.metrics.store_errors_by_kind.get("read_only", 0) >= 1, b.metrics.store_errors_by_kind
    b.ack_rows("mqtt", [1, 2])  # the output delivered: the cursor moves in memory
    assert b.metrics.ack_errors >= 1 and [r.seq for r in b.read("mqtt")] == [3]
    b._conn.execute("PRAGMA query_only=OFF")
    b.append([ev(4, 10)])
    b.ack_rows("mqtt", [3])  # ev(2); ev(3) waited in memory and got seq 4
    assert [json.loads(r.payload)["i"] for r in b.read("mqtt")] == [3, 4]
    b.close()
    again = Buffer(small_fs.dir / "b.db")
    again.register_outputs(["mqtt"])
    assert again.cursor("mqtt") == 3, "the cursor kept in memory was written once the disk took writes"
    assert [json.loads(r.payload)["i"] for r in again.read("mqtt")] == [3, 4]
    assert again.integrity_check() == "ok"


async def test_read_only_file_system_at_start_is_survived(small_fs, caplog):
    """A real read-only remount (root): the agent neither crashes nor loses events; it commits once rw."""
    caplog.set_level(logging.INFO, "edge_agent.buffer")
    path = small_fs.dir / "b.db"
    first = Buffer(path)
    first.register_outputs(["mqtt"])
    first.append([ev(0, 10)])
    first.close()
    if small_fs.real:
        small_fs.read_only(True)
    else:
        os.chmod(small_fs.dir, 0o555)
        os.chmod(path, 0o444)
    b = AsyncBuffer(path, retry_interval=0.2)
    opening = asyncio.create_task(b.open())
    await asyncio.sleep(0.5)
    if opening.done():  # SQLite could open it for reading: writes wait in memory
        await opening
        await b.register_outputs(["mqtt"])
        assert await b.append([ev(1, 10)]) == []
        assert b.metrics.store_errors >= 1 and b.metrics.pending_events == 1
    else:
        assert b.open_errors >= 1 and "event=buffer_open_failed" in caplog.text
    if small_fs.real:
        small_fs.read_only(False)
    else:
        os.chmod(small_fs.dir, 0o755)
        os.chmod(path, 0o644)
    async with asyncio.timeout(10):
        if not opening.done():
            await opening
            await b.register_outputs(["mqtt"])
        if b.metrics.pending_events == 0 and b.last_seq == 1:
            await b.append([ev(1, 10)])
        while b.metrics.pending_events:
            await asyncio.sleep(0.05)
    assert [json.loads(r.payload)["i"] for r in await b.read("mqtt")] == [0, 1]
    await b.close()


async def test_async_buffer_retries_by_itself_and_bounds_memory(small_fs):
    b = await AsyncBuffer(small_fs.dir / "b.db", max_bytes=10**9, max_pending=100, retry_interval=0.2).open()
    await b.register_outputs(["mqtt"])
    if not small_fs.real:
        b.sync._conn.execute(f"PRAGMA max_page_count={b.sync._conn.execute('PRAGMA page_count').fetchone()[0] + 20}")
    n = 0
    while b.metrics.store_errors == 0:
        await b.append([ev(n)])
        n += 1
    extra = 300  # more than max_pending: the excess is shed from memory, into a gap event
    await b.append([NewEvent("state", 5000.0 + i, "t/m/event/state", {"type": "state", "i": i})
                    for i in range(extra)])
    assert b.metrics.pending_events == 100 and b.metrics.shed_events > 0
    if small_fs.real:
        small_fs.resize("8m")
    else:
        b.sync._conn.execute("PRAGMA max_page_count=1073741823")
    async with asyncio.timeout(5):
        while b.metrics.pending_events:
            await asyncio.sleep(0.05)
    rows = await b.read("mqtt", 10_000)
    gap = [json.loads(r.payload) for r in rows if r.type == "gap"]
    assert len(gap) == 1 and gap[0]["reason"] == "store_unavailable"
    counts = [r for r in rows if r.type == "count"]
    assert len(counts) == n, "count facts are kept over detail when memory is bounded"
    lost = sum(d["count"] for d in gap[0]["dropped"])
    states = sum(1 for r in rows if r.type == "state")
    assert lost + states == extra and lost > 0
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    await b.close()


async def test_agent_process_survives_a_full_disk_and_delivers_everything(tmp_path, broker, agent_factory):
    """The real agent on a disk that fills up during a broker outage: no crash loop, nothing lost.

    As root the buffer lives on a 256 kB tmpfs, later grown; otherwise the agent runs with a
    file-size limit (RLIMIT_FSIZE, EFBIG: an I/O error to SQLite) that the test later raises.
    """
    import resource

    from conftest import (
        Collector,
        FrozenClock,
        free_port,
        modbus_line_config,
        write_config,
    )
    from delivery_support import check_complete, start_simulator

    fs = SmallFs(tmp_path)
    try:
        cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                                 buffer={"path": str(fs.dir / "buffer.db")})
        clock = FrozenClock()
        machine, sim = await start_simulator(cfg, clock)
        agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
        async with Collector(broker.port) as c:
            agent.start()
            if not fs.real:
                resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (400_000, resource.RLIM_INFINITY))
            await c.wait_for(lambda: c.events("state"), 15, "the first state event")
            broker.stop()
            clock.run()
            await c.wait_for(lambda: "event=buffer_store_failed" in agent.output(), 60, "the disk to fill up")
            await asyncio.sleep(3)  # producing on, with a full disk
            assert agent.proc.poll() is None, "the agent must not exit on a full disk"
            clock.freeze()
            if fs.real:
                fs.resize("32m")
            else:
                resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            broker.start()
            await c.wait_for(lambda: sum(e["count"] for e in {x["event_id"]: x for x in c.events()}.values()
                                         if e["type"] == "count") >= machine.total, 60, f"{machine.total} parts")
            check_complete(c.events(), machine.total)
        out = agent.output()
        assert "event=buffer_recovered" in out
        assert out.count("event=buffer_store_failed") == 1, "logged once, not once per retry"
        assert agent.stop() == 0
        sim.cancel()
    finally:
        fs.close()
