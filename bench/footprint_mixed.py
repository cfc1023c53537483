"""Agent footprint with 10,000 tags at 1 s: 5,000 Modbus (5 devices of 1,000), 3,000 OPC UA
(one server, polled), 2,000 S7 (one PLC). Servers in their own processes; 10 machines
on the Modbus devices, counters stepping every second; every other value ramps (Modbus)
or stays (OPC UA, S7). CPU % of one core and RSS of the agent's process, as in `footprint`.
"""

from __future__ import annotations

from bench.common import (
    Figure,
    Mosquitto,
    Settings,
    base_config,
    median,
    modbus_map,
    server,
    workdir,
)
from bench.footprint import measure
from bench.servers import NS


def run(s: Settings) -> list[Figure]:
    with workdir("mixed") as tmp:
        broker = Mosquitto(tmp)
        servers = []
        try:
            mb = server("modbus", machines=10, counter="rate", hz=1, ramp=1000)
            servers.append(mb)
            ua = server("opcua", machines=1, others=2998)
            servers.append(ua)
            s7 = server("s7", machines=1, others=1998)
            servers.append(s7)
            machines, devices, tags = [], [], []
            for d in range(5):
                ms, ts = modbus_map(1000, 10 if d == 0 else 0)
                name = f"mb{d}"
                for t in ts:
                    t["device"] = name
                    if d:
                        t["name"] = f"{name}_{t['name']}"
                machines += ms
                tags += ts
                devices.append({"name": name, "protocol": "modbus_tcp", "host": "127.0.0.1",
                                "port": mb.ready["port"], "poll_interval": "1s", "timeout": "2s"})
            devices.append({"name": "ua", "protocol": "opcua", "url": ua.ready["url"], "poll_interval": "1s",
                            "timeout": "5s"})
            tags += [{"name": "ua_run", "device": "ua", "address": f"nsu={NS};s=m0.run", "type": "Boolean"},
                     {"name": "ua_parts", "device": "ua", "address": f"nsu={NS};s=m0.parts", "type": "UInt32"}]
            tags += [{"name": f"ua{i}", "device": "ua", "address": f"nsu={NS};s=v{i}", "type": "UInt16"}
                     for i in range(2998)]
            devices.append({"name": "s7", "protocol": "s7", "host": "127.0.0.1", "port": s7.ready["port"],
                            "poll_interval": "1s", "timeout": "2s"})
            tags += [{"name": "s7_run", "device": "s7", "address": "DB1.DBX0.0", "type": "BOOL"},
                     {"name": "s7_parts", "device": "s7", "address": "DB1.DBD2", "type": "UDINT"}]
            tags += [{"name": f"s7v{i}", "device": "s7", "address": f"DB1.DBW{6 + 2 * i}", "type": "INT"}
                     for i in range(1998)]
            machines += [{"id": "ua_m", "signals": {"run": "ua_run", "part_counter": "ua_parts"}},
                         {"id": "s7_m", "signals": {"run": "s7_run", "part_counter": "s7_parts"}}]
            assert len(tags) == 10_000, len(tags)
            cfg = base_config(tmp, broker.port, machines=machines, devices=devices, tags=tags)
            got, _ = measure(s, tmp, cfg, "mixed10k", servers, probe=False)
        finally:
            for srv in servers:
                srv.stop()
            broker.stop()
    cpu, rss = median([g["cpu_pct"] for g in got]), median([g["rss_mb"] for g in got])
    return [
        Figure("footprint_mixed:cpu", "10,000 tags at 1 s (5k Modbus, 3k OPC UA, 2k S7): agent CPU", round(cpu, 1),
               "% of a core", "<= 25 %", cpu <= 25, {"runs": [round(g["cpu_pct"], 2) for g in got]}),
        Figure("footprint_mixed:rss", "10,000 tags at 1 s (5k Modbus, 3k OPC UA, 2k S7): agent RSS", round(rss, 1),
               "MB", "<= 120 MB", rss <= 120, {"runs": [round(g["rss_mb"], 1) for g in got]}),
    ]
