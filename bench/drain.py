"""Backlog drain to mosquitto, QoS 1, one event per message.

A buffer is filled with N count events (the agent's own `Buffer`), then the agent
starts with no devices and forwards the backlog to a private mosquitto. The rate is
taken at a QoS 0 subscriber between 10 % and 90 % of the messages (connect and the
last batch excluded). The forwarder's backlog `replay_rate` limit (default 1,000
events/s, meant to spare the broker after an outage) is lifted to measure capacity.
Reference in the same run: bare aiomqtt QoS 1 publishes, 200 in flight, same broker,
rate taken the same way at a subscriber.
"""

from __future__ import annotations

import asyncio
import json
import time

from bench.common import (
    Agent,
    Figure,
    Mosquitto,
    Settings,
    Subscriber,
    base_config,
    log,
    median,
    workdir,
    write_config,
)

TARGET = 4_000


def fill(path, n: int) -> None:
    from bench.buffer import events
    from buffer import Buffer

    b = Buffer(path, durability="normal", max_bytes=4 * 1024**3)
    try:
        for i in range(0, n, 1000):
            b.append(events(min(1000, n - i), i))
    finally:
        b.close()


def rate_at(sub: Subscriber, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while len(sub.messages) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    got = len(sub.messages)
    if got < n * 0.9:
        raise RuntimeError(f"only {got} of {n} messages arrived within {timeout}s")
    lo, hi = int(got * 0.1), int(got * 0.9)
    return (hi - lo) / (sub.messages[hi][0] - sub.messages[lo][0])


def bare_rate(port: int, n: int) -> float:
    """aiomqtt QoS 1, 200 publishes in flight (gather in chunks), payloads like the agent's."""
    import aiomqtt

    payload = json.dumps({"event_id": "x" * 36, "seq": 1, "schema": "edge-agent/count/v1", "type": "count",
                          "site": "s", "area": "a", "line": "l", "machine": "m0", "ts": "2026-11-22T01:02:03.456Z",
                          "count": 1, "good": 1, "scrap": 0, "counter": 1, "tag": "parts"}).encode()

    async def go() -> float:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-bare-{time.monotonic_ns()}",
                                  max_inflight_messages=200, timeout=10) as c:
            c.pending_calls_threshold = 10_000
            sem = asyncio.Semaphore(200)

            async def pub(i):
                async with sem:
                    await c.publish(f"bare/s/a/l/m{i % 10}/event/count", payload, qos=1, timeout=10)

            t0 = time.perf_counter()
            for i in range(0, n, 500):
                await asyncio.gather(*(pub(j) for j in range(i, min(n, i + 500))))
            return n / (time.perf_counter() - t0)

    return asyncio.run(go())


def run(s: Settings) -> list[Figure]:
    n = s.pick(20_000, 6_000)
    rates, bare, cpu = [], [], []
    with workdir("drain") as tmp:
        broker = Mosquitto(tmp)
        try:
            for r in range(s.runs):
                db = tmp / f"drain{r}.db"
                fill(db, n)
                cfg = base_config(tmp, broker.port, machines=[{"id": "m0"}], devices=[], tags=[], durability="full")
                cfg["buffer"]["path"] = str(db)
                cfg["outputs"]["mqtt"]["replay_rate"] = 1e9
                sub = Subscriber(broker.port, "bench/+/+/+/+/event/count")
                agent = Agent(write_config(tmp / f"drain{r}.yaml", cfg), tmp / f"drain{r}.log")
                try:
                    c0, t0 = agent.cpu_seconds(), time.monotonic()
                    rates.append(rate_at(sub, n, 120))
                    cpu.append(100 * (agent.cpu_seconds() - c0) / (time.monotonic() - t0))
                finally:
                    agent.stop()
                    sub.close()
                sub = Subscriber(broker.port, "bare/+/+/+/+/event/count")
                try:
                    bare_rate(broker.port, n)
                    bare.append(rate_at(sub, n, 120))
                finally:
                    sub.close()
                log(f"drain run {r + 1}/{s.runs}: agent {rates[-1]:,.0f}/s, bare aiomqtt {bare[-1]:,.0f}/s")
        finally:
            broker.stop()
    value = round(median(rates))
    ratios = [a / b for a, b in zip(rates, bare)]
    return [Figure("drain", "Backlog drain to mosquitto, QoS 1, one event per message", value, "events/s",
                   f">= {TARGET:,}", value >= TARGET,
                   {"runs": [round(x) for x in rates], "events": n, "bare_aiomqtt_qos1_200_inflight": round(median(bare)),
                    "ratio_to_bare_median": round(median(ratios), 3), "agent_cpu_pct_median": round(median(cpu), 1)},
                   note=f"bare aiomqtt (200 in flight) {median(bare):,.0f}/s in the same runs")]
