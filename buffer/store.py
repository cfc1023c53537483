"""The store-and-forward buffer.

Every event is committed to SQLite (WAL) before any output sees it. Each event gets
a random `event_id` and a per-agent `seq` that is gap-free and survives restarts:
the last seq is stored in the same transaction as the events. Each output has a
cursor (the highest seq it has had acknowledged); a row is deleted only once every
output's cursor has passed it. Derivation state (for instance the last raw counter
value) is saved in the same transaction as the events it produced, so a crash can
never separate the two.

`Buffer` is synchronous and must be used from one thread; `AsyncBuffer` runs it on
a dedicated thread so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

log = logging.getLogger("edge_agent.buffer")
T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class NewEvent:
    """An event ready to store: where it goes and what it says (without event_id/seq)."""

    type: str
    ts: float
    topic: str
    body: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Row:
    seq: int
    event_id: str
    type: str
    ts: float
    topic: str
    payload: bytes


class Buffer:
    def __init__(self, path: str | Path, *, max_bytes: int = 256 * 1024**2, durability: str = "full",
                 gap_topic: str = "edge/agent/event/gap"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.gap_topic = gap_topic
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        c.execute("PRAGMA busy_timeout=5000")
        db = sqlite_utils.Database(c)
        db["events"].create(
            {"seq": int, "event_id": str, "type": str, "ts": float, "topic": str, "payload": bytes},
            pk="seq", not_null={"event_id", "type", "ts", "topic", "payload"}, if_not_exists=True,
        )
        db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db["cursors"].create({"output": str, "acked_seq": int}, pk="output", if_not_exists=True)
        self._page_size = c.execute("PRAGMA page_size").fetchone()[0]
        row = c.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        top = c.execute("SELECT max(seq) FROM events").fetchone()[0]
        self.last_seq = max(int(row[0]) if row else 0, top or 0)
        self._outputs: list[str] = []

    # ------------------------------------------------------------ writing

    def append(self, events: Sequence[NewEvent], state: dict[str, Any] | None = None) -> list[Row]:
        """Commit events (and derivation state) in one transaction; returns them with ids and seqs."""
        rows = []
        seq = self.last_seq
        for e in events:
            seq += 1
            event_id = str(uuid.uuid4())
            payload = json.dumps({"event_id": event_id, "seq": seq, **e.body}, separators=(",", ":")).encode()
            rows.append(Row(seq, event_id, e.type, e.ts, e.topic, payload))
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO events(seq, event_id, type, ts, topic, payload) VALUES (?,?,?,?,?,?)",
                [(r.seq, r.event_id, r.type, r.ts, r.topic, r.payload) for r in rows],
            )
            if rows:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)", (str(seq),))
            for key, value in (state or {}).items():
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (f"state:{key}", json.dumps(value)))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.last_seq = seq
        if rows and self._used_bytes() > self.max_bytes:
            self._shed()
        return rows

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
        c.execute("BEGIN IMMEDIATE")
        for n in names:
            c.execute("INSERT OR IGNORE INTO cursors(output, acked_seq) VALUES (?, ?)", (n, start))
        c.execute(f"DELETE FROM cursors WHERE output NOT IN ({','.join('?' * len(names))})", list(names))
        c.execute("COMMIT")
        self._trim()

    def cursor(self, output: str) -> int:
        row = self._conn.execute("SELECT acked_seq FROM cursors WHERE output=?", (output,)).fetchone()
        return row[0] if row else 0

    def read(self, output: str, limit: int = 500) -> list[Row]:
        """The next rows this output has not had acknowledged, oldest first."""
        cur = self._conn.execute(
            "SELECT seq, event_id, type, ts, topic, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (self.cursor(output), limit),
        )
        return [Row(*r) for r in cur]

    def ack(self, output: str, upto_seq: int) -> None:
        """Everything up to `upto_seq` is acknowledged by `output`; delete what all outputs have."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE cursors SET acked_seq=max(acked_seq, ?) WHERE output=?", (upto_seq, output))
        c.execute("COMMIT")
        self._trim()

    def _trim(self) -> None:
        floor = self._conn.execute("SELECT min(acked_seq) FROM cursors").fetchone()[0]
        if floor is not None and self._outputs:
            self._conn.execute("DELETE FROM events WHERE seq <= ?", (floor,))

    # ------------------------------------------------------------ size cap

    def _used_bytes(self) -> int:
        c = self._conn
        pages = c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * self._page_size

    def _shed(self) -> None:
        """Over the size cap: drop the oldest tenth and say exactly what in a gap event.

        Gap events themselves are never dropped (they are the record of the loss), and
        cursors do not move: outputs simply find the dropped rows gone.
        """
        c = self._conn
        depth = c.execute("SELECT count(*) FROM events WHERE type != 'gap'").fetchone()[0]
        if depth == 0:
            return
        n = max(1, depth // 10)
        victims = "SELECT seq FROM events WHERE type != 'gap' ORDER BY seq LIMIT ?"
        summary = c.execute(
            f"SELECT type, count(*), min(ts), max(ts), min(seq), max(seq) FROM events WHERE seq IN ({victims}) "
            "GROUP BY type ORDER BY min(seq)", (n,),
        ).fetchall()
        c.execute("BEGIN IMMEDIATE")
        c.execute(f"DELETE FROM events WHERE seq IN ({victims})", (n,))
        c.execute("COMMIT")
        dropped = [{"type": t, "count": k, "from_ts": a, "to_ts": b, "from_seq": s0, "to_seq": s1}
                   for t, k, a, b, s0, s1 in summary]
        log.error("event=buffer_full max_bytes=%d dropped=%d from_seq=%d to_seq=%d",
                  self.max_bytes, n, dropped[0]["from_seq"], dropped[-1]["to_seq"])
        self.append([NewEvent("gap", dropped[0]["from_ts"], self.gap_topic,
                              {"schema": "edge-agent/gap/v1", "type": "gap", "reason": "buffer_full",
                               "dropped": dropped})])

    # ------------------------------------------------------------ inspection

    def stats(self) -> dict[str, Any]:
        depth, oldest = self._conn.execute("SELECT count(*), min(ts) FROM events").fetchone()
        cursors = dict(self._conn.execute("SELECT output, acked_seq FROM cursors"))
        return {"depth": depth, "oldest_ts": oldest, "last_seq": self.last_seq,
                "bytes": self._used_bytes(), "max_bytes": self.max_bytes, "cursors": cursors}

    def close(self) -> None:
        self._conn.close()


class AsyncBuffer:
    """`Buffer` on its own thread: one writer, never blocking the event loop."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        self._args, self._kwargs = args, kwargs
        self.sync: Buffer | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> AsyncBuffer:
        self.sync = await self._call(lambda: Buffer(*self._args, **self._kwargs))
        return self

    async def append(self, events: Sequence[NewEvent], state: dict[str, Any] | None = None) -> list[Row]:
        return await self._call(self.sync.append, events, state)

    async def state(self, key: str) -> Any:
        return await self._call(self.sync.state, key)

    async def register_outputs(self, names: Sequence[str]) -> None:
        await self._call(self.sync.register_outputs, names)

    async def read(self, output: str, limit: int = 500) -> list[Row]:
        return await self._call(self.sync.read, output, limit)

    async def ack(self, output: str, upto_seq: int) -> None:
        await self._call(self.sync.ack, output, upto_seq)

    async def stats(self) -> dict[str, Any]:
        return await self._call(self.sync.stats)

    async def close(self) -> None:
        if self.sync is not None:
            await self._call(self.sync.close)
        self._executor.shutdown(wait=True)
