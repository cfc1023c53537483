"""The SQLite buffer: gap-free seq across restarts, rows leave only on ack, state in the same commit."""

from __future__ import annotations

import json
import sqlite3

import pytest

from buffer import AsyncBuffer, Buffer, NewEvent, priority_of


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
    b._conn.execute("CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.seq = 3 "
                    "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError):
        # the second insert fails: neither the first event nor the state may land
        b.append([ev(2), ev(3)], state={"m1": {"counter": 2}})
    b._conn.execute("DROP TRIGGER boom")
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


# ------------------------------------------------------------ shedding by priority, age cap


def fill(b: Buffer, types: list[str], pad: int = 1500) -> None:
    for i, t in enumerate(types):
        b.append([NewEvent(t, 1000.0 + i, f"t/m/event/{t}", {"type": t, "i": i, "pad": "x" * pad})])


def gaps(b: Buffer) -> list[dict]:
    return [json.loads(r.payload) for r in b.read("mqtt", 100_000) if r.type == "gap"]


def test_shedding_drops_samples_first_then_detail_then_aggregates_and_names_everything(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=400_000, gap_topic="t/gap")
    b.register_outputs(["mqtt"])
    kinds = ["sample", "state", "aggregate", "count"] * 60  # 240 rows of ~1.6 kB, interleaved
    fill(b, kinds)
    left = {t: sum(1 for r in b.read("mqtt", 100_000) if r.type == t) for t in set(kinds)}
    dropped: dict[str, int] = {}
    for g in gaps(b):
        assert g["reason"] == "buffer_full" and g["count"] == sum(d["count"] for d in g["dropped"])
        for d in g["dropped"]:
            dropped[d["type"]] = dropped.get(d["type"], 0) + d["count"]
            assert d["from_seq"] <= d["to_seq"] and sum(b_ - a + 1 for a, b_ in d["seq_ranges"]) == d["count"]
    assert dropped, "the cap must have been reached"
    assert left["count"] == 60 and "count" not in dropped, "facts go last: here none had to go"
    assert dropped.get("sample", 0) > 0
    assert dropped.get("state", 0) > 0, "with samples gone, detail goes next"
    # at each shed, everything stored before it with a lower priority than what it dropped was gone already
    remaining = b.read("mqtt", 100_000)
    for r in remaining:
        if r.type != "gap":
            continue
        g = json.loads(r.payload)
        worst = max(priority_of(d["type"]) for d in g["dropped"])
        older_cheaper = [x for x in remaining if x.seq < r.seq and x.priority < worst]
        assert not older_cheaper, f"gap {r.seq} dropped priority {worst} while cheaper rows remained"
    for t in kinds[:4]:
        assert left[t] + dropped.get(t, 0) == 60, f"every {t} is either stored or named in a gap event"


def test_facts_are_shed_only_as_a_last_resort_and_the_gap_names_their_exact_seqs(tmp_path):
    b = Buffer(tmp_path / "b.db", max_bytes=150_000, gap_topic="t/gap")
    b.register_outputs(["mqtt"])
    fill(b, ["count"] * 200)
    remaining = sorted(r.seq for r in b.read("mqtt", 100_000) if r.type == "count")
    named = sorted(s for g in gaps(b) for d in g["dropped"] for a, z in d["seq_ranges"] for s in range(a, z + 1))
    counts_seqs = set(remaining) | set(named)
    assert len(named) > 0 and not (set(remaining) & set(named))
    gap_seqs = {r.seq for r in b.read("mqtt", 100_000) if r.type == "gap"}
    assert counts_seqs | gap_seqs == set(range(1, b.last_seq + 1)), "every seq is a stored row or named in a gap"
    all_counts = sorted(counts_seqs)
    assert named == all_counts[:len(named)], "the oldest facts go first"


def test_age_cap_drops_old_events_with_a_gap_event(tmp_path):
    now = [10_000.0]
    b = Buffer(tmp_path / "b.db", max_age=3600, gap_topic="t/gap", clock=lambda: now[0])
    b.register_outputs(["mqtt"])
    b.append([ev(i) for i in range(5)])
    now[0] += 3000
    b.append([ev(i, "state") for i in range(3)])
    now[0] += 1000  # the first five are now 4000 s old, the states 1000 s
    b.append([ev(9)])
    g = gaps(b)
    assert len(g) == 1 and g[0]["reason"] == "max_age"
    assert g[0]["dropped"] == [{"type": "count", "count": 5, "from_ts": 1000.0, "to_ts": 1004.0,
                                "from_seq": 1, "to_seq": 5, "seq_ranges": [[1, 5]]}]
    assert [r.type for r in b.read("mqtt")] == ["state"] * 3 + ["count", "gap"]


# ------------------------------------------------------------ out-of-order acks, dead letters, purge, export


def test_out_of_order_acks_move_the_cursor_only_over_the_unbroken_run(tmp_path):
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt"])
    b.append([ev(i) for i in range(10)])
    b.ack_rows("mqtt", [8, 9, 10])  # live lane first
    assert b.cursor("mqtt") == 0 and [r.seq for r in b.read("mqtt")] == [1, 2, 3, 4, 5, 6, 7]
    b.ack_rows("mqtt", [1, 2, 3])
    assert b.cursor("mqtt") == 3 and b.stats()["depth"] == 7
    b.ack_rows("mqtt", [4, 5, 6, 7])
    assert b.cursor("mqtt") == 10 and b.stats()["depth"] == 0
    b.close()
    again = Buffer(tmp_path / "b.db")
    again.register_outputs(["mqtt"])
    assert again.cursor("mqtt") == 10


def test_dead_letters_are_kept_and_counted_and_do_not_block(tmp_path):
    b = Buffer(tmp_path / "b.db")
    b.register_outputs(["mqtt", "https"])
    rows = b.append([ev(i) for i in range(4)])
    b.dead_letter("https", rows[1:2], 422, "HTTP 422: bad field")
    b.ack_rows("https", [1])
    assert [r.seq for r in b.read("https")] == [3, 4]
    s = b.stats()
    assert s["dead_letters"] == {"https": 1} and s["metrics"]["dead_letters"] == 1
    (dl,) = list(b.export(dead_letters=True))
    assert dl["seq"] == 2 and dl["status"] == 422 and dl["payload"]["seq"] == 2 and "bad field" in dl["error"]


def test_purge_records_a_gap_and_seq_continues(tmp_path):
    b = Buffer(tmp_path / "b.db", gap_topic="t/gap")
    b.register_outputs(["mqtt"])
    b.append([ev(i) for i in range(3)])
    other = Buffer(tmp_path / "b.db", gap_topic="t/gap")  # the CLI, next to the running agent
    assert other.purge() == 3
    other.close()
    rows = b.append([ev(7)])  # the agent must not reuse seq 4 (the purge's gap event)
    assert rows[0].seq == 5
    g = gaps(b)
    assert g[0]["reason"] == "purged" and g[0]["dropped"][0]["seq_ranges"] == [[1, 3]]
    assert [r["seq"] for r in b.export()] == [4, 5]


# ------------------------------------------------------------ edge-agent buffer stats|export|purge


def _cli(*args: str, input: str | None = None):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", "edge_agent", "buffer", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, input=input, check=False)


def test_cli_stats_export_purge(tmp_path):
    from conftest import modbus_line_config, write_config

    cfg = modbus_line_config(tmp_path, modbus_port=1502, mqtt_port=1883)
    config = str(write_config(tmp_path / "agent.yaml", cfg))
    b = Buffer(tmp_path / "buffer.db", gap_topic="t/gap")
    b.register_outputs(["mqtt"])
    b.append([ev(i) for i in range(5)])
    b.ack("mqtt", 2)
    b.close()
    s = json.loads(_cli("stats", "--config", config, "--json").stdout)
    assert s["depth"] == 3 and s["cursors"] == {"mqtt": 2} and s["unacked"] == {"mqtt": 3} and s["last_seq"] == 5
    assert s["oldest_age_s"] >= 0 and s["bytes"] > 0 and s["dead_letters"] == {}
    human = _cli("stats", "--config", config).stdout
    assert "depth       3 event(s)" in human and "mqtt: acked up to seq 2, 3 waiting" in human
    export = _cli("export", "--config", config)
    assert [json.loads(line)["seq"] for line in export.stdout.splitlines()] == [3, 4, 5]
    assert "exported 3/3" in export.stderr
    no = _cli("purge", "--config", config, input="n\n")
    assert no.returncode == 1 and "nothing deleted" in no.stdout
    assert json.loads(_cli("stats", "--config", config, "--json").stdout)["depth"] == 3
    yes = _cli("purge", "--config", config, "--yes")
    assert yes.returncode == 0 and "deleted 3 event(s)" in yes.stdout
    (gap,) = [json.loads(line) for line in _cli("export", "--config", config).stdout.splitlines()]
    assert gap["type"] == "gap" and gap["seq"] == 6 and gap["payload"]["reason"] == "purged"
    assert gap["payload"]["dropped"][0]["seq_ranges"] == [[3, 5]]
    missing = _cli("stats", "--config", str(write_config(tmp_path / "other.yaml", {
        **cfg, "buffer": {"path": str(tmp_path / "nope.db")}})))
    assert missing.returncode == 1 and "no buffer at" in missing.stderr


def test_a_buffer_from_the_previous_version_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, type TEXT NOT NULL, ts FLOAT NOT NULL,
                             topic TEXT NOT NULL, payload BLOB NOT NULL);
        CREATE TABLE meta ([key] TEXT PRIMARY KEY, [value] TEXT);
        CREATE TABLE cursors ([output] TEXT PRIMARY KEY, [acked_seq] INTEGER);
        INSERT INTO events VALUES (7, 'e7', 'count', 1700000000.0, 't/event/count', '{"seq":7}');
        INSERT INTO meta VALUES ('last_seq', '7');
        INSERT INTO cursors VALUES ('mqtt', 6);
    """)
    con.close()
    b = Buffer(path, max_age=3600, clock=lambda: 1700000100.0)
    b.register_outputs(["mqtt"])
    (row,) = b.read("mqtt")
    assert (row.seq, row.stored, row.priority) == (7, 1700000000.0, 3)
    assert [r.seq for r in b.append([ev(1)])] == [8]
    assert b.stats()["depth"] == 2, "nothing is dropped by the age cap after the migration"


def test_random_out_of_order_acks_never_skip_an_unacked_row(tmp_path):
    """Random lanes, partial acks, reopen (acks above the cursor are forgotten: resent, never skipped)."""
    import random

    rng = random.Random(6)
    path = tmp_path / "b.db"
    b = Buffer(path)
    b.register_outputs(["o"])
    acked: set[int] = set()
    for step in range(300):
        op = rng.random()
        if op < 0.3:
            b.append([ev(step) for _ in range(rng.randint(1, 5))])
        elif op < 0.85:
            split = rng.randint(0, b.last_seq + 1)
            lane = b.read("o", rng.randint(1, 20), before=split) if rng.random() < 0.5 else \
                b.read("o", rng.randint(1, 20), after=split - 1)
            assert not {r.seq for r in lane} & acked, "read returned an acknowledged row"
            chosen = [r.seq for r in lane if rng.random() < 0.7]
            b.ack_rows("o", chosen)
            acked.update(chosen)
        elif op < 0.9:
            b.close()
            b = Buffer(path)
            b.register_outputs(["o"])
            acked = {s for s in acked if s <= b.cursor("o")}  # memory-only acks are gone: those rows come again
        cur = b.cursor("o")
        assert all(s in acked for s in range(1, cur + 1)), f"cursor {cur} passed an unacknowledged row"
        stored = {r["seq"] for r in b.export()}
        assert stored >= {s for s in range(cur + 1, b.last_seq + 1) if s not in acked}, "an unacked row was deleted"
    rest = b.read("o", 10_000)
    b.ack_rows("o", [r.seq for r in rest])
    assert b.cursor("o") == b.last_seq and b.stats()["depth"] == 0


def test_every_published_event_type_has_its_shedding_priority():
    """Facts a MES books go last, aggregates are kept over detail, gap events never go."""
    from pathlib import Path

    from buffer.store import AGGREGATE, DETAIL, FACT, NEVER, priority_of

    schemas = Path(__file__).resolve().parent.parent / "schemas"
    types = {p.name.split(".")[0] for p in schemas.glob("*.v1.json")}
    facts = {"count", "cycle", "downtime", "downtime_update", "micro_stop", "counter_reset", "order", "order_summary"}
    assert facts <= types, "every fact type has a schema"
    assert {t: priority_of(t) for t in types} == {
        **{t: FACT for t in facts}, "aggregate": AGGREGATE, "state": DETAIL, **{t: NEVER for t in types & {"gap"}}}


def test_event_ids_are_random_rfc4122_version4_uuids():
    import uuid

    from buffer.store import new_event_id

    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for text in list(ids)[:500]:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122
