"""The SQLite buffer: gap-free seq across restarts, rows leave only on ack, state in the same commit."""

from __future__ import annotations

import json
import sqlite3

import pytest

from buffer import AsyncBuffer, Buffer, NewEvent


def ev(i: int, type_: str = "count") -> NewEvent:
    return NewEvent(type_, 1000.0 + i, f"t/m/event/{type_}", {"type": type_, "n": i})


def test_seq_is_gap_free_and_survives_reopen(tmp_path):
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt"])
    first = b.append([ev(i) for i in range(5)])
    assert [r.seq for r in first] == [1, 2, 3, 4, 5]
    b.ack("mqtt", 5)  # all delivered and deleted: the next seq must still be 6
    assert b.stats()["depth"] == 0
    b.close()
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt"])
    assert [r.seq for r in b.append([ev(9)])] == [6]
    payload = json.loads(b.read("mqtt")[0].payload)
    assert payload["seq"] == 6 and payload["n"] == 9 and len(payload["event_id"]) == 36


def test_rows_leave_only_after_every_output_acked(tmp_path):
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt", "https"])
    b.append([ev(i) for i in range(10)])
    b.ack("mqtt", 10)
    assert b.stats()["depth"] == 10, "https has not acknowledged anything yet"
    assert [r.seq for r in b.read("https", 3)] == [1, 2, 3]
    assert b.read("mqtt") == []
    b.ack("https", 4)
    assert b.stats()["depth"] == 6
    assert b.read("https", 1)[0].seq == 5


def test_unacked_rows_survive_a_crash(tmp_path):
    path = tmp_path / "b.db"
    b = Buffer(path)
    b.register_outputs(["mqtt"])
    b.append([ev(i) for i in range(3)], state={"m1": {"counter": 42}})
    # no close(): the connection is simply abandoned, as after kill -9
    other = Buffer(path)
    other.register_outputs(["mqtt"])
    assert [r.seq for r in other.read("mqtt")] == [1, 2, 3]
    assert other.state("m1") == {"counter": 42}


def test_events_and_state_commit_together(tmp_path):
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt"])
    b.append([ev(1)], state={"m1": {"counter": 1}})
    with pytest.raises(sqlite3.IntegrityError):
        # a duplicate seq makes the insert fail: neither the events nor the state may land
        b.last_seq = 0
        b.append([ev(2)], state={"m1": {"counter": 2}})
    b.last_seq = 1
    assert b.state("m1") == {"counter": 1}
    assert [r.seq for r in b.read("mqtt")] == [1]


def test_wal_mode_and_full_sync_by_default(tmp_path):
    b = Buffer(tmp_path / "b.db")
    assert b._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_size_cap_drops_oldest_with_an_exact_gap_event(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=200_000, gap_topic="t/gap")
    b.register_outputs(["mqtt"])
    big = "x" * 2000
    for i in range(300):
        b.append([NewEvent("count", float(i), "t/m/event/count", {"pad": big})])
    stats = b.stats()
    assert stats["bytes"] <= 200_000 + 64 * 1024  # within a few pages of the cap
    rows = b.read("mqtt", 10_000)
    gaps = [json.loads(r.payload) for r in rows if r.type == "gap"]
    assert gaps, "dropping events must leave a gap event"
    dropped = sum(d["count"] for g in gaps for d in g["dropped"])
    remaining = sum(1 for r in rows if r.type == "count")
    assert remaining + dropped == 300
    assert all(d["type"] == "count" for g in gaps for d in g["dropped"])


async def test_async_buffer_runs_off_the_event_loop(tmp_path):
    b = await AsyncBuffer(tmp_path / "b.db").open()
    await b.register_outputs(["mqtt"])
    rows = await b.append([ev(1), ev(2)])
    assert [r.seq for r in await b.read("mqtt")] == [r.seq for r in rows]
    await b.ack("mqtt", rows[-1].seq)
    assert (await b.stats())["depth"] == 0
    await b.close()
