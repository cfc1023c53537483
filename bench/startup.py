"""Start to first sample: from spawning `python -m edge_agent run` to its first read request
arriving at the PLC (the server stamps it), and to the first event at an MQTT subscriber.

Per protocol (Modbus TCP, S7, OPC UA), each with a config that uses only that protocol,
so the figure includes importing that driver's library (asyncua alone ~0.6 s) and no
other. The headline is the slowest protocol's median.
"""

from __future__ import annotations

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
    server,
    workdir,
    write_config,
)
from bench.servers import NS

TARGET = 2.0


def devices(kind: str, info: dict) -> tuple[dict, list[dict]]:
    if kind == "modbus":
        dev = {"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": info["port"],
               "poll_interval": "100ms", "timeout": "1s"}
        tags = [{"name": "run", "device": "plc", "address": "coil:0", "type": "bool"},
                {"name": "parts", "device": "plc", "address": "hr:0", "type": "uint32"}]
    elif kind == "s7":
        dev = {"name": "plc", "protocol": "s7", "host": "127.0.0.1", "port": info["port"],
               "poll_interval": "100ms", "timeout": "1s"}
        tags = [{"name": "run", "device": "plc", "address": "DB1.DBX0.0", "type": "BOOL"},
                {"name": "parts", "device": "plc", "address": "DB1.DBD2", "type": "UDINT"}]
    else:
        dev = {"name": "plc", "protocol": "opcua", "url": info["url"], "poll_interval": "100ms", "timeout": "2s"}
        tags = [{"name": "run", "device": "plc", "address": f"nsu={NS};s=m0.run", "type": "Boolean"},
                {"name": "parts", "device": "plc", "address": f"nsu={NS};s=m0.parts", "type": "UInt32"}]
    return dev, tags


def run(s: Settings) -> list[Figure]:
    figures, worst = [], 0.0
    with workdir("startup") as tmp:
        broker = Mosquitto(tmp)
        try:
            for kind in ("modbus", "s7", "opcua"):
                srv = server(kind, machines=1)
                firsts, events = [], []
                try:
                    for r in range(s.runs):
                        dev, tags = devices(kind, srv.ready)
                        cfg = base_config(tmp, broker.port, machines=[{"id": "m0", "signals": {
                            "run": "run", "part_counter": "parts"}}], devices=[dev], tags=tags)
                        cfg["buffer"]["path"] = str(tmp / f"{kind}{r}.db")
                        srv.ask("arm")
                        srv.reports.clear()
                        sub = Subscriber(broker.port, "bench/+/+/+/+/event/#")
                        agent = Agent(write_config(tmp / f"{kind}{r}.yaml", cfg), tmp / f"{kind}{r}.log")
                        try:
                            deadline = time.monotonic() + 20
                            while time.monotonic() < deadline and not (
                                    sub.messages and any("first_request" in x for x in srv.reports)):
                                time.sleep(0.01)
                            first = next(x["first_request"] for x in srv.reports if "first_request" in x)
                            firsts.append(first - agent.started)
                            events.append(sub.messages[0][0] - agent.started)
                        except StopIteration:
                            raise RuntimeError(f"{kind}: no request within 20 s: {agent.output()[-1500:]}") from None
                        finally:
                            agent.stop()
                            sub.close()
                        log(f"startup {kind} run {r + 1}/{s.runs}: first request {firsts[-1]:.2f} s, "
                            f"first event {events[-1]:.2f} s")
                finally:
                    srv.stop()
                value = median(firsts)
                worst = max(worst, value)
                figures.append(Figure(f"startup:{kind}", f"Start to first sample ({kind} config)", round(value, 2), "s",
                                      f"<= {TARGET:g} s", value <= TARGET,
                                      {"runs_s": [round(x, 3) for x in firsts],
                                       "first_event_at_subscriber_median_s": round(median(events), 3)},
                                      note=f"first event at the subscriber {median(events):.2f} s"))
        finally:
            broker.stop()
    return figures
