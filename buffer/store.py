"""The store-and-forward buffer.

Every event is committed to SQLite (WAL) before any output sees it. Each event gets
a random `event_id` and a per-agent `seq` that is gap-free and survives restarts:
the last seq is stored in the same transaction as the events. Each output has a
cursor (the highest seq below which it has had everything acknowledged); acks that
arrive out of order (a live event delivered while the backlog replays) are kept in
memory until the cursor reaches them. A row is deleted once every output's cursor
has passed it. Derivation state (for instance the last raw counter value) is saved
in the same transaction as the events it produced, so a crash can never separate them.

Bounds (see docs/buffer.md): a size cap and an age cap. Over a cap, rows are shed by
priority - raw samples first, then detail, then aggregates, and count/cycle/downtime
facts only as a last resort - and every shed is recorded in a `gap` event that names
type, time range, seq ranges and count. Gap events are never shed.

Storage failures (disk full, read-only file system, I/O error) never crash the agent:
events that cannot be committed wait in memory (bounded, shed by the same priorities
into a gap event) and are committed, in order, when the disk takes writes again.

`Buffer` is synchronous and must be used from one thread; `AsyncBuffer` runs it on
a dedicated thread so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("edge_agent.buffer")
T = TypeVar("T")

_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps(separators=...) builds one per call


def new_event_id() -> str:
    """A random (version 4) UUID as text, like str(uuid.uuid4()) at a third of the cost per event."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Shedding order: lowest priority first. Gap events (NEVER) are the record of a loss.
SAMPLE, DETAIL, AGGREGATE, FACT, NEVER = 0, 1, 2, 3, 4
# What a MES books (counts, cycles, downtime and its classification, order context and the
# order summary an ERP confirms) goes last; state changes are detail: aggregates carry their times.
FACT_TYPES = frozenset({"count", "cycle", "downtime", "downtime_update", "micro_stop", "counter_reset",
                        "order", "order_summary"})
AGGREGATE_TYPES = frozenset({"aggregate"})
SAMPLE_TYPES = frozenset({"sample", "raw"})


def priority_of(event_type: str) -> int:
    """Shed priority by event type: raw samples 0, detail 1, aggregates 2, facts 3, gap 4."""
    if event_type == "gap":
        return NEVER
    if event_type in FACT_TYPES:
        return FACT
    if event_type in AGGREGATE_TYPES or event_type.endswith("_aggregate"):
        return AGGREGATE
    if event_type in SAMPLE_TYPES:
        return SAMPLE
    return DETAIL


# SQLite primary result codes that mean "the disk will not take writes now": survive them.
_UNAVAILABLE = {8: "read_only", 10: "io_error", 13: "disk_full", 14: "cannot_open"}


def storage_problem(exc: BaseException) -> str | None:
    """'disk_full' / 'read_only' / 'io_error' / 'cannot_open' for a survivable storage error, else None."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE:
            return _UNAVAILABLE[code & 0xFF]
        text = str(exc).lower()
        for needle, kind in (("disk is full", "disk_full"), ("readonly", "read_only"),
                             ("read-only", "read_only"), ("disk i/o", "io_error"), ("unable to open", "cannot_open")):
            if needle in text:
                return kind
    if isinstance(exc, OSError):
        return {28: "disk_full", 30: "read_only", 13: "read_only"}.get(exc.errno or 0, "io_error")
    return None


@dataclass(slots=True, frozen=True)
class NewEvent:
    """An event ready to store: where it goes and what it says (without event_id/seq)."""

    type: str
    ts: float
    topic: str
    body: dict[str, Any]
    priority: int | None = None  # default: priority_of(type)


@dataclass(slots=True, frozen=True)
class Row:
    seq: int
    event_id: str
    type: str
    ts: float
    topic: str
    payload: bytes
    stored: float = 0.0  # wall-clock time of the commit
    priority: int = DETAIL


@dataclass(slots=True)
class BufferMetrics:
    """Counters for the metrics module; monotonic except the gauges marked so."""

    events_stored: int = 0
    commits: int = 0
    store_errors: int = 0  # failed commits (disk full, read-only, I/O)
    store_errors_by_kind: dict[str, int] = field(default_factory=dict)
    pending_events: int = 0  # gauge: events waiting in memory for the disk
    shed_events: int = 0  # dropped by a cap (each one named in a gap event)
    shed_by_type: dict[str, int] = field(default_factory=dict)
    gap_events: int = 0
    dead_letters: int = 0
    ack_errors: int = 0  # cursor updates that could not be written (kept in memory)
    last_error: str | None = None


_COLUMNS = "seq, event_id, type, ts, topic, payload, stored, priority"


def _ranges(seqs: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


class Buffer:
    def __init__(self, path: str | Path, *, max_bytes: int = 256 * 1024**2, durability: str = "full",
                 max_age: float | None = None, max_pending: int = 100_000,
                 gap_topic: str = "edge/agent/event/gap", clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.max_bytes, self.max_age, self.max_pending = max_bytes, max_age, max_pending
        self.durability = durability
        self.gap_topic = gap_topic
        self.clock = clock
        self.metrics = BufferMetrics()
        self._pending: list[NewEvent] = []  # not yet committed because the disk refused
        self._pending_state: dict[str, Any] = {}
        self._lost: list[tuple[NewEvent, str]] = []  # shed from memory, to be named in a gap event
        self._outputs: list[str] = []
        self._cursors: dict[str, int] = {}
        self._acked: dict[str, set[int]] = {}  # acked above the cursor (out of order), in memory
        self._dirty_cursors: set[str] = set()
        self._last_age_check = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={ {'full': 'FULL', 'normal': 'NORMAL', 'off': 'OFF'}[self.durability] }")
        c.execute("PRAGMA busy_timeout=5000")
        c.execute("""CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL,
                     type TEXT NOT NULL, ts FLOAT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
                     stored FLOAT NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 1)""")
        columns = {r[1] for r in c.execute("PRAGMA table_info(events)")}
        for name, decl in (("stored", "FLOAT NOT NULL DEFAULT 0"), ("priority", "INTEGER NOT NULL DEFAULT 1")):
            if name not in columns:  # a buffer written by an older version
                c.execute(f"ALTER TABLE events ADD COLUMN {name} {decl}")
                if name == "stored":  # the sample time is the best guess (the age cap reads `stored`)
                    c.execute("UPDATE events SET stored=ts")
                else:
                    c.create_function("edge_priority", 1, priority_of, deterministic=True)
                    c.execute("UPDATE events SET priority=edge_priority(type)")
        c.execute("CREATE INDEX IF NOT EXISTS events_shed ON events(priority, seq)")
        c.execute("CREATE TABLE IF NOT EXISTS meta ([key] TEXT PRIMARY KEY, [value] TEXT)")
        c.execute("CREATE TABLE IF NOT EXISTS cursors ([output] TEXT PRIMARY KEY, [acked_seq] INTEGER)")
        c.execute("""CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY, output TEXT NOT NULL,
                     seq INTEGER NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, ts FLOAT NOT NULL,
                     topic TEXT NOT NULL, payload BLOB NOT NULL, status INTEGER, error TEXT, failed FLOAT NOT NULL)""")
        self._page_size = c.execute("PRAGMA page_size").fetchone()[0]
        self.last_seq = self._stored_last_seq()

    def _stored_last_seq(self) -> int:
        c = self._conn
        row = c.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        top = c.execute("SELECT max(seq) FROM events").fetchone()[0]
        return max(int(row[0]) if row else 0, top or 0)

    # ------------------------------------------------------------ writing

    def append(self, events: Sequence[NewEvent], state: dict[str, Any] | None = None) -> list[Row]:
        """Commit events (and derivation state) in one transaction; returns the rows committed now.

        When the disk refuses (full, read-only, I/O error) nothing is raised: the events
        and state wait in memory and are committed first, in order, by the next append or
        `retry_pending()`. The rows returned then include earlier pending ones.
        """
        self._pending.extend(events)
        self._pending_state.update(state or {})
        self.metrics.pending_events = len(self._pending)
        return self.retry_pending()

    def retry_pending(self) -> list[Row]:
        """Commit what waits in memory; [] if the disk still refuses (logged and counted)."""
        if not self._pending and not self._pending_state and not self._lost:
            return []
        events = list(self._pending)
        if self._lost:
            events.append(self._gap_event(self._lost, "store_unavailable"))
        try:
            rows = self._commit(events, self._pending_state)
        except Exception as e:
            kind = storage_problem(e)
            if kind is None:  # a bug, not the disk: do not retry it forever
                self._pending, self._pending_state, self._lost = [], {}, []
                self.metrics.pending_events = 0
                raise
            self._store_failed(kind, e)
            return []
        if self._lost:
            self.metrics.gap_events += 1
        self._pending, self._pending_state, self._lost = [], {}, []
        self.metrics.pending_events = 0
        if self.metrics.last_error is not None:
            log.warning("event=buffer_recovered committed=%d (events that waited in memory are stored)", len(rows))
            self.metrics.last_error = None
        self._flush_cursors()
        self._enforce_caps()
        return rows

    def _store_failed(self, kind: str, exc: BaseException) -> None:
        m = self.metrics
        m.store_errors += 1
        m.store_errors_by_kind[kind] = m.store_errors_by_kind.get(kind, 0) + 1
        first = m.last_error is None
        m.last_error = f"{kind}: {exc}"
        over = len(self._pending) - self.max_pending
        if over > 0:  # memory is bounded too: shed by priority, remember what for the gap event
            order = sorted(range(len(self._pending)), key=lambda i: (self._pri(self._pending[i]), i))
            drop = set(order[:over])
            for i in sorted(drop):
                e = self._pending[i]
                self._lost.append((e, kind))
                m.shed_events += 1
                m.shed_by_type[e.type] = m.shed_by_type.get(e.type, 0) + 1
            self._pending = [e for i, e in enumerate(self._pending) if i not in drop]
        m.pending_events = len(self._pending)
        level = logging.ERROR if first else logging.DEBUG
        log.log(level, "event=buffer_store_failed kind=%s pending=%d lost=%d path=%s error=%r%s", kind,
                len(self._pending), len(self._lost), self.path, str(exc),
                " (events wait in memory and are committed when the disk takes writes again)" if first else "")

    @staticmethod
    def _pri(e: NewEvent) -> int:
        return e.priority if e.priority is not None else priority_of(e.type)

    def _commit(self, events: Sequence[NewEvent], state: dict[str, Any]) -> list[Row]:
        c = self._conn
        stored = self.clock()
        c.execute("BEGIN IMMEDIATE")
        try:
            # read last_seq inside the write lock: another process (edge-agent buffer purge) may have appended
            seq = max(self.last_seq, self._stored_last_seq())
            rows = []
            for e in events:
                seq += 1
                event_id = new_event_id()
                payload = _JSON.encode({"event_id": event_id, "seq": seq, **e.body}).encode()
                rows.append(Row(seq, event_id, e.type, e.ts, e.topic, payload, stored, self._pri(e)))
            c.executemany(
                f"INSERT INTO events({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                [(r.seq, r.event_id, r.type, r.ts, r.topic, r.payload, r.stored, r.priority) for r in rows],
            )
            if rows:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)", (str(seq),))
            for key, value in state.items():
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (f"state:{key}", json.dumps(value)))
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.last_seq = seq
        self.metrics.events_stored += len(rows)
        self.metrics.commits += 1
        return rows

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as e:  # SQLite may have rolled back by itself (SQLITE_FULL)
                log.debug("event=buffer_rollback_failed error=%r", str(e))

    def state(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (f"state:{key}",)).fetchone()
        return json.loads(row[0]) if row else None

    # ------------------------------------------------------------ forwarding

    def register_outputs(self, names: Sequence[str]) -> None:
        """Declare the outputs that must acknowledge a row before it is deleted."""
        c = self._conn
        self._outputs = list(names)
        oldest = c.execute("SELECT min(seq) FROM events").fetchone()[0]
        start = (oldest - 1) if oldest is not None else self.last_seq
        known = dict(c.execute("SELECT output, acked_seq FROM cursors"))
        self._cursors = {n: known.get(n, start) for n in names}
        self._acked = {n: set() for n in names}
        try:
            c.execute("BEGIN IMMEDIATE")
            for n in names:
                c.execute("INSERT OR IGNORE INTO cursors(output, acked_seq) VALUES (?, ?)", (n, start))
            c.execute(f"DELETE FROM cursors WHERE output NOT IN ({','.join('?' * len(names))})", list(names))
            c.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            kind = storage_problem(e)
            if kind is None:
                raise
            self._dirty_cursors.update(names)  # written when the disk takes writes again
            self._store_failed(kind, e)
            return
        self._trim()

    def cursor(self, output: str) -> int:
        if output in self._cursors:
            return self._cursors[output]
        row = self._conn.execute("SELECT acked_seq FROM cursors WHERE output=?", (output,)).fetchone()
        return row[0] if row else 0

    def read(self, output: str, limit: int = 500, *, after: int = 0, before: int | None = None) -> list[Row]:
        """The next rows this output has not had acknowledged, oldest first (seq > after, seq < before)."""
        acked = self._acked.get(output, set())
        start = max(self.cursor(output), after)
        q = f"SELECT {_COLUMNS} FROM events WHERE seq > ?" + (" AND seq < ?" if before is not None else "")
        top = before if before is not None else float("inf")
        skip = sum(1 for s in acked if start < s < top)  # rows in range that were acked out of order
        out: list[Row] = []
        while len(out) < limit:
            params: list[Any] = [start] + ([before] if before is not None else [])
            batch = self._conn.execute(q + " ORDER BY seq LIMIT ?", (*params, limit + skip)).fetchall()
            out.extend(Row(*r) for r in batch if r[0] not in acked)
            if len(batch) < limit + skip:
                break
            start = batch[-1][0]
        return out[:limit]

    def ack(self, output: str, upto_seq: int) -> None:
        """Everything up to `upto_seq` is acknowledged by `output`; delete what all outputs have."""
        self._cursors[output] = max(self.cursor(output), upto_seq)
        self._acked.setdefault(output, set())
        self._advance(output)

    def ack_rows(self, output: str, seqs: Sequence[int]) -> None:
        """These rows (in any order) are acknowledged; the cursor moves over the unbroken run."""
        self._cursors.setdefault(output, self.cursor(output))
        self._acked.setdefault(output, set()).update(s for s in seqs if s > self._cursors[output])
        self._advance(output)

    def _advance(self, output: str) -> None:
        acked, cur = self._acked[output], self._cursors[output]
        while acked:
            above = [s for (s,) in self._conn.execute(
                "SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT 1000", (cur,))]
            if not above:  # nothing stored above the cursor: the acked rows are gone (shed)
                cur = max(cur, max(acked))
            blocked = False
            for s in above:
                if s not in acked:
                    blocked = True
                    break
                cur = s
            acked.difference_update([s for s in acked if s <= cur])
            if blocked or not above:
                break
        self._cursors[output] = cur
        self._dirty_cursors.add(output)
        self._flush_cursors()

    def _flush_cursors(self) -> None:
        if not self._dirty_cursors:
            return
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
            for o in self._dirty_cursors:
                c.execute("INSERT INTO cursors(output, acked_seq) VALUES (?, ?) ON CONFLICT(output) "
                          "DO UPDATE SET acked_seq=max(acked_seq, excluded.acked_seq)", (o, self._cursors[o]))
            if self._outputs:
                c.execute("DELETE FROM events WHERE seq <= ?", (min(self._cursors.get(o, 0) for o in self._outputs),))
            c.execute("COMMIT")
            self._dirty_cursors.clear()
        except sqlite3.Error as e:
            self._rollback()
            kind = storage_problem(e)
            if kind is None:
                raise
            # the cursor lives on in memory; after a crash the rows are sent again (same event_id)
            self.metrics.ack_errors += 1
            self.metrics.last_error = f"{kind}: {e}"
            log.debug("event=buffer_cursor_not_saved kind=%s error=%r", kind, str(e))

    def _trim(self) -> None:
        if not self._outputs:
            return
        floor = min(self._cursors.get(o, 0) for o in self._outputs)
        try:
            self._conn.execute("DELETE FROM events WHERE seq <= ?", (floor,))
        except sqlite3.Error as e:
            if storage_problem(e) is None:
                raise
            log.debug("event=buffer_trim_failed error=%r", str(e))

    def dead_letter(self, output: str, rows: Sequence[Row], status: int | None, error: str) -> None:
        """The peer rejected these rows for good: keep them in `dead_letters` and move on."""
        c = self._conn
        failed = self.clock()
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO dead_letters(output, seq, event_id, type, ts, topic, payload, status, error, failed) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(output, r.seq, r.event_id, r.type, r.ts, r.topic, r.payload, status, error[:2000], failed) for r in rows])
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.metrics.dead_letters += len(rows)
        log.error("event=dead_letter output=%s rows=%d from_seq=%d to_seq=%d status=%s error=%r",
                  output, len(rows), rows[0].seq, rows[-1].seq, status, error[:200])
        self.ack_rows(output, [r.seq for r in rows])

    # ------------------------------------------------------------ caps

    def _used_bytes(self) -> int:
        c = self._conn
        pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * self._page_size

    def _enforce_caps(self) -> None:
        now = self.clock()
        if self.max_age is not None and now - self._last_age_check >= min(60.0, self.max_age / 10):
            self._last_age_check = now
            first = self._conn.execute("SELECT stored, priority FROM events ORDER BY seq LIMIT 1").fetchone()
            if first is None or (first[0] >= now - self.max_age and first[1] < NEVER):
                first = None  # rows are stored in seq order: the oldest is young enough, skip the scan
            victims = [] if first is None else self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE stored < ? AND priority < ? ORDER BY seq",
                (now - self.max_age, NEVER)).fetchall()
            if victims:
                self._shed([Row(*r) for r in victims], "max_age")
        for _ in range(50):
            if self._used_bytes() <= self.max_bytes:
                return
            depth = self._conn.execute("SELECT count(*) FROM events WHERE priority < ?", (NEVER,)).fetchone()[0]
            if depth == 0:
                return
            victims = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE priority < ? ORDER BY priority, seq LIMIT ?",
                (NEVER, max(1, depth // 10))).fetchall()
            self._shed([Row(*r) for r in victims], "buffer_full")

    def _shed(self, victims: list[Row], reason: str) -> None:
        """Delete these rows and commit a gap event naming them, in one transaction."""
        c = self._conn
        gap = self._gap_event([(r, reason) for r in victims], reason)
        try:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("DELETE FROM events WHERE seq=?", [(r.seq,) for r in victims])
            c.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            if storage_problem(e) is None:
                raise
            return
        for r in victims:
            self.metrics.shed_events += 1
            self.metrics.shed_by_type[r.type] = self.metrics.shed_by_type.get(r.type, 0) + 1
        self.metrics.gap_events += 1
        log.error("event=buffer_shed reason=%s max_bytes=%d max_age=%s dropped=%d types=%s", reason,
                  self.max_bytes, self.max_age, len(victims),
                  ",".join(f"{d['type']}:{d['count']}" for d in gap.body["dropped"]))
        try:
            self._commit([gap], {})
        except sqlite3.Error as e:
            kind = storage_problem(e)
            if kind is None:
                raise
            self._pending.append(gap)
            self._store_failed(kind, e)

    def _gap_event(self, dropped: Sequence[tuple[Row | NewEvent, str]], reason: str) -> NewEvent:
        """A gap event that says exactly what was dropped: per type count, time range and seq ranges."""
        by_type: dict[str, list[Row | NewEvent]] = {}
        for item, _ in dropped:
            by_type.setdefault(item.type, []).append(item)
        summary = []
        for t, items in by_type.items():
            entry: dict[str, Any] = {"type": t, "count": len(items), "from_ts": min(i.ts for i in items),
                                     "to_ts": max(i.ts for i in items)}
            seqs = [i.seq for i in items if isinstance(i, Row)]
            if seqs:  # committed rows have seqs; events lost before commit never got one
                entry["from_seq"], entry["to_seq"], entry["seq_ranges"] = min(seqs), max(seqs), _ranges(seqs)
            summary.append(entry)
        summary.sort(key=lambda d: (d.get("from_seq", 0), d["from_ts"]))
        ts = min(d["from_ts"] for d in summary)
        from edge_agent.model import (
            rfc3339,  # light module; keeps buffer importable alone otherwise
        )

        body = {"schema": "edge-agent/gap/v1", "type": "gap", "reason": reason, "ts": rfc3339(ts),
                "count": sum(d["count"] for d in summary), "dropped": summary}
        return NewEvent("gap", ts, self.gap_topic, body, NEVER)

    # ------------------------------------------------------------ inspection and maintenance

    def stats(self) -> dict[str, Any]:
        c = self._conn
        depth, oldest, oldest_stored = c.execute("SELECT count(*), min(ts), min(stored) FROM events").fetchone()
        cursors = {o: self.cursor(o) for o, in c.execute("SELECT output FROM cursors")}
        pending = {o: c.execute("SELECT count(*) FROM events WHERE seq > ?", (cur,)).fetchone()[0]
                   - len(self._acked.get(o, ())) for o, cur in cursors.items()}
        dead = dict(c.execute("SELECT output, count(*) FROM dead_letters GROUP BY output"))
        by_type = dict(c.execute("SELECT type, count(*) FROM events GROUP BY type"))
        files = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        now = self.clock()
        return {"path": str(self.path), "depth": depth, "oldest_ts": oldest,
                "oldest_age_s": (now - oldest_stored) if oldest_stored else None,
                "last_seq": self.last_seq, "bytes": self._used_bytes(), "file_bytes": files,
                "max_bytes": self.max_bytes, "max_age_s": self.max_age, "durability": self.durability,
                "cursors": cursors, "unacked": pending, "dead_letters": dead, "by_type": by_type,
                "metrics": asdict(self.metrics)}

    def export(self, *, dead_letters: bool = False, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every stored event (or dead letter), oldest first, as plain dicts for JSON lines."""
        c = self._conn
        if dead_letters:
            q = ("SELECT id, output, seq, event_id, type, ts, topic, payload, status, error, failed FROM dead_letters "
                 "WHERE id > ? ORDER BY id LIMIT ?")
            last = 0
            while rows := c.execute(q, (last, batch)).fetchall():
                for i, o, seq, eid, t, ts, topic, payload, status, err, failed in rows:
                    yield {"output": o, "seq": seq, "event_id": eid, "type": t, "ts": ts, "topic": topic,
                           "status": status, "error": err, "failed": failed, "payload": json.loads(payload)}
                last = rows[-1][0]
            return
        last = 0
        while rows := c.execute(f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                (last, batch)).fetchall():
            for r in (Row(*x) for x in rows):
                yield {"seq": r.seq, "event_id": r.event_id, "type": r.type, "ts": r.ts, "stored": r.stored,
                       "priority": r.priority, "topic": r.topic, "payload": json.loads(r.payload)}
            last = rows[-1][0]

    def count(self, *, dead_letters: bool = False) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {'dead_letters' if dead_letters else 'events'}").fetchone()[0]

    def purge(self, *, dead_letters: bool = False) -> int:
        """Delete every stored event (recorded in a `purged` gap event so the MES knows) or every dead letter."""
        c = self._conn
        if dead_letters:
            n = c.execute("DELETE FROM dead_letters").rowcount
            return n
        victims = [Row(*r) for r in c.execute(f"SELECT {_COLUMNS} FROM events WHERE priority < ? ORDER BY seq",
                                              (NEVER,))]
        if victims:
            self._shed(victims, "purged")
        return len(victims)

    def integrity_check(self) -> str:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        try:
            self._flush_cursors()
        finally:
            self._conn.close()


class AsyncBuffer:
    """`Buffer` on its own thread: one writer, never blocking the event loop.

    While events wait in memory (disk full, read-only), a background task retries
    every `retry_interval` seconds, so they are committed even if no new event comes.
    Opening retries too, with a clear log, instead of crashing into a restart loop.
    """

    def __init__(self, *args: Any, retry_interval: float = 2.0, **kwargs: Any):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._args, self._kwargs = args, kwargs
        self.retry_interval = retry_interval
        self.sync: Buffer | None = None
        self._retry_task: asyncio.Task | None = None
        self.open_errors = 0

    @property
    def metrics(self) -> BufferMetrics:
        return self.sync.metrics if self.sync else BufferMetrics()

    @property
    def last_seq(self) -> int:
        return self.sync.last_seq if self.sync else 0

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def open(self) -> AsyncBuffer:
        delay = 1.0
        while True:
            try:
                self.sync = await self._call(lambda: Buffer(*self._args, **self._kwargs))
                break
            except (sqlite3.Error, OSError) as e:
                kind = storage_problem(e)
                if kind is None:
                    raise
                self.open_errors += 1
                log.error("event=buffer_open_failed kind=%s path=%s error=%r retry_in=%.0fs",
                          kind, self._args[0] if self._args else self._kwargs.get("path"), str(e), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._retry_task = asyncio.create_task(self._retry_loop(), name="buffer-retry")
        return self

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            if self.sync._pending or self.sync._pending_state or self.sync._lost or self.sync._dirty_cursors:
                await self._call(self.sync.retry_pending)
                await self._call(self.sync._flush_cursors)
            elif self.sync.max_age is not None:
                await self._call(self.sync._enforce_caps)

    async def append(self, events: Sequence[NewEvent], state: dict[str, Any] | None = None) -> list[Row]:
        return await self._call(self.sync.append, events, state)

    async def state(self, key: str) -> Any:
        return await self._call(self.sync.state, key)

    async def register_outputs(self, names: Sequence[str]) -> None:
        await self._call(self.sync.register_outputs, names)

    async def read(self, output: str, limit: int = 500, *, after: int = 0, before: int | None = None) -> list[Row]:
        return await self._call(self.sync.read, output, limit, after=after, before=before)

    async def ack(self, output: str, upto_seq: int) -> None:
        await self._call(self.sync.ack, output, upto_seq)

    async def ack_rows(self, output: str, seqs: Sequence[int]) -> None:
        await self._call(self.sync.ack_rows, output, seqs)

    async def dead_letter(self, output: str, rows: Sequence[Row], status: int | None, error: str) -> None:
        await self._call(self.sync.dead_letter, output, rows, status, error)

    async def cursor(self, output: str) -> int:
        return await self._call(self.sync.cursor, output)

    async def stats(self) -> dict[str, Any]:
        return await self._call(self.sync.stats)

    async def close(self) -> None:
        if self._retry_task:
            self._retry_task.cancel()
            await asyncio.gather(self._retry_task, return_exceptions=True)
        if self.sync is not None:
            try:
                await self._call(self.sync.retry_pending)
            except sqlite3.Error as e:
                log.error("event=buffer_close_with_pending pending=%d error=%r", len(self.sync._pending), str(e))
            await self._call(self.sync.close)
        self._executor.shutdown(wait=True)
