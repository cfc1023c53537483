"""Latency: a value changes at the PLC -> the event arrives at an MQTT subscriber.

The server process changes the part counters of 10 machines at random moments (each
about every 250 ms, independent of the poll grid) and reports each change with its
wall-clock time; the subscriber (QoS 1, this process) stamps arrivals. Each count event
carries the raw counter, which names the change. Latency = arrival - change. Split:
`read` = sample time (the event's `ts`) - change, `pipeline` = arrival - sample time.

- Modbus polling at 100 ms: the read delay is uniform over one poll interval, so the
  floor of p99 is ~99 ms; the target leaves 25 ms for derivation, commit and MQTT.
- OPC UA subscription (sampling and publishing interval 10 ms), with mosquitto's defaults
  and with `set_tcp_nodelay true`: by default mosquitto leaves Nagle's algorithm on for
  what it sends to subscribers, which delays ~1-2 % of messages by tens of ms.
"""

from __future__ import annotations

import time
from datetime import datetime

from bench.common import (
    Agent,
    Figure,
    Mosquitto,
    Settings,
    Subscriber,
    base_config,
    log,
    median,
    percentile,
    server,
    workdir,
    write_config,
)

MACHINES = 10


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()  # 3.11 reads the trailing Z


def measure(srv, sub: Subscriber, seconds: float) -> dict[str, list[float]]:
    srv.reports.clear()
    t_start = time.time()
    time.sleep(seconds)
    time.sleep(1.0)  # let the last changes arrive
    changes = {(r["change"][0], r["change"][1]): r["t"] for r in list(srv.reports) if "change" in r}
    total, read, pipe = [], [], []
    for arrival, body in sub.events("count"):
        if arrival < t_start:
            continue
        key = (int(body["machine"][1:]), body["counter"])
        if key not in changes or body.get("count") != 1:
            continue  # a change before the window, or two changes in one poll (counted once)
        total.append(1000 * (arrival - changes[key]))
        read.append(1000 * (_ts(body["ts"]) - changes[key]))
        pipe.append(1000 * (arrival - _ts(body["ts"])))
    return {"total": total, "read": read, "pipeline": pipe, "changes": len(changes)}


def one(s: Settings, key: str, name: str, target_ms: float, kind: str, make_dev, make_tags,
        durability: str = "full", nodelay: bool = False) -> Figure:
    seconds = s.pick(20.0, 8.0)
    p99s, p50s, reads, pipes, counts, maxes = [], [], [], [], [], []
    with workdir(key) as tmp:
        broker = Mosquitto(tmp, nodelay=nodelay)
        srv = server(kind, machines=MACHINES, counter="random", mean_interval=0.25)
        try:
            for r in range(s.runs):
                machines = [{"id": f"m{k}", "signals": {"run": f"m{k}_run", "part_counter": f"m{k}_parts"}}
                            for k in range(MACHINES)]
                cfg = base_config(tmp, broker.port, machines=machines, devices=[make_dev(srv.ready)],
                                  tags=make_tags(), durability=durability)
                cfg["buffer"]["path"] = str(tmp / f"lat{r}.db")
                sub = Subscriber(broker.port, "bench/+/+/+/+/event/count")
                agent = Agent(write_config(tmp / f"lat{r}.yaml", cfg), tmp / f"lat{r}.log")
                try:
                    deadline = time.monotonic() + 30
                    while not sub.events("count") and time.monotonic() < deadline:
                        time.sleep(0.1)
                    time.sleep(1.0)
                    got = measure(srv, sub, seconds)
                finally:
                    agent.stop()
                    sub.close()
                if not got["total"]:
                    raise RuntimeError(f"no latency samples: {agent.output()[-1500:]}")
                p99s.append(percentile(got["total"], 99))
                p50s.append(percentile(got["total"], 50))
                maxes.append(max(got["total"]))
                reads.append(percentile(got["read"], 99))
                pipes.append(percentile(got["pipeline"], 99))
                counts.append(len(got["total"]))
                log(f"{key} run {r + 1}/{s.runs}: n={len(got['total'])} p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms "
                    f"(read p99 {reads[-1]:.1f}, pipeline p99 {pipes[-1]:.1f}), max {maxes[-1]:.1f}")
        finally:
            srv.stop()
            broker.stop()
    p99 = median(p99s)
    return Figure(key, name, round(p99, 1), "ms p99", f"<= {target_ms:g} ms", p99 <= target_ms, {
        "p99_runs_ms": [round(x, 1) for x in p99s], "p50_median_ms": round(median(p50s), 1),
        "read_p99_median_ms": round(median(reads), 1), "pipeline_p99_median_ms": round(median(pipes), 1),
        "max_median_ms": round(median(maxes), 1), "samples_per_run": counts, "window_s": seconds},
        note=f"p50 {median(p50s):.0f} ms; read p99 {median(reads):.0f} ms + pipeline p99 {median(pipes):.0f} ms")


def modbus(s: Settings) -> Figure:
    def dev(info):
        return {"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": info["port"],
                "poll_interval": "100ms", "timeout": "1s"}

    def tags():
        out = []
        for k in range(MACHINES):
            out.append({"name": f"m{k}_run", "device": "plc", "address": f"coil:{k}", "type": "bool"})
            out.append({"name": f"m{k}_parts", "device": "plc", "address": f"hr:{2 * k}", "type": "uint32"})
        return out

    return one(s, "latency:modbus_poll_100ms", "Latency PLC change -> MQTT subscriber, Modbus polling 100 ms",
               125, "modbus", dev, tags)


def opcua(s: Settings, nodelay: bool = False) -> Figure:
    from bench.servers import NS

    def dev(info):
        return {"name": "plc", "protocol": "opcua", "url": info["url"], "mode": "subscribe",
                "poll_interval": "10ms", "sampling_interval": "10ms", "publishing_interval": "10ms", "timeout": "5s"}

    def tags():
        out = []
        for k in range(MACHINES):
            out.append({"name": f"m{k}_run", "device": "plc", "address": f"nsu={NS};s=m{k}.run", "type": "Boolean"})
            out.append({"name": f"m{k}_parts", "device": "plc", "address": f"nsu={NS};s=m{k}.parts", "type": "UInt32"})
        return out

    if nodelay:
        return one(s, "latency:opcua_subscription_nodelay", "Latency PLC change -> MQTT subscriber, OPC UA "
                   "subscription, mosquitto set_tcp_nodelay", 50, "opcua", dev, tags, nodelay=True)
    return one(s, "latency:opcua_subscription", "Latency PLC change -> MQTT subscriber, OPC UA subscription",
               50, "opcua", dev, tags)


def run(s: Settings) -> list[Figure]:
    return [modbus(s), opcua(s), opcua(s, nodelay=True)]
