"""Durable event appends to the SQLite buffer (WAL, synchronous=FULL: one fsync per commit).

In-process on `buffer.Buffer` (the code the agent's buffer thread runs), with count
events shaped like the agent's. The agent commits one transaction per derivation
batch, so the rate depends on the batch size: the headline is 100 events per commit
(a busy line); 1, 10 and 1,000 are in the detail. Also `durability: normal` at 100.
"""

from __future__ import annotations

import time

from bench.common import Figure, Settings, log, median, workdir

HEADLINE_BATCH = 100
TARGET = 50_000


def events(n: int, start: int = 0):
    from buffer import NewEvent

    out = []
    for i in range(start, start + n):
        m = f"m{i % 10}"
        out.append(NewEvent("count", 1.7e9 + i * 0.01, f"bench/s/a/l/{m}/event/count", {
            "schema": "edge-agent/count/v1", "type": "count", "site": "s", "area": "a", "line": "l", "machine": m,
            "ts": "2026-11-22T01:02:03.456Z", "count": 1, "good": 1, "scrap": 0, "counter": i, "tag": "parts"}))
    return out


def rate(tmp, batch: int, total: int, durability: str = "full") -> float:
    from buffer import Buffer

    path = tmp / f"b{batch}-{durability}-{time.monotonic_ns()}.db"
    b = Buffer(path, durability=durability, max_bytes=4 * 1024**3)
    try:
        chunks = [events(batch, i) for i in range(0, total, batch)]
        state = {"m0": {"counter": 1}}
        t0 = time.perf_counter()
        for chunk in chunks:
            b.append(chunk, state)
        return total / (time.perf_counter() - t0)
    finally:
        b.close()
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def run(s: Settings) -> list[Figure]:
    total = s.pick(50_000, 10_000)
    detail: dict[str, float] = {}
    with workdir("buffer") as tmp:
        for batch, n in ((1, s.pick(2_000, 500)), (10, s.pick(10_000, 2_000)), (HEADLINE_BATCH, total),
                         (1000, total)):
            rates = [rate(tmp, batch, n) for _ in range(s.runs)]
            detail[f"events_per_s_batch_{batch}"] = round(median(rates))
            if batch == 1:
                detail["commits_per_s"] = round(median(rates))
            log(f"buffer batch {batch}: {median(rates):,.0f} events/s (runs {[round(r) for r in rates]})")
        normal = [rate(tmp, HEADLINE_BATCH, total, "normal") for _ in range(s.runs)]
        detail[f"events_per_s_batch_{HEADLINE_BATCH}_durability_normal"] = round(median(normal))
    value = detail[f"events_per_s_batch_{HEADLINE_BATCH}"]
    return [Figure("buffer", f"Buffer: durable appends (synchronous=FULL, {HEADLINE_BATCH} events/commit)",
                   value, "events/s", f">= {TARGET:,}", value >= TARGET, detail,
                   note=f"1/commit: {detail['events_per_s_batch_1']:,}/s; 1000/commit: "
                        f"{detail['events_per_s_batch_1000']:,}/s")]
