"""Modbus TCP poll rate through the full pipeline vs a bare pymodbus read loop (same server, same requests)."""

from __future__ import annotations

from bench.common import Figure, Settings, base_config, modbus_map
from bench.rates import compare

TAGS = 100


def config(tmp, mqtt_port, info):
    machines, tags = modbus_map(TAGS, 1)
    dev = {"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": info["port"],
           "poll_interval": 0.0001, "timeout": "5s"}
    return base_config(tmp, mqtt_port, machines=machines, devices=[dev], tags=tags)


def plan_of(ctx):
    from drivers.modbus.driver import ModbusDriver

    cfg = ctx["cfg"]
    return ModbusDriver(cfg.devices[0], cfg.tags_of("plc")).plan


def run(s: Settings) -> list[Figure]:
    return [compare(
        s, key="modbus_rate", kind="modbus", server_opts={"machines": 1, "counter": "rate", "hz": 10, "ramp": TAGS},
        make_config=config,
        bare_opts=lambda ctx, o: {**o, "port": ctx["info"]["port"],
                                  "plan": [(r.table, r.unit, r.start, r.count) for r in plan_of(ctx)]},
        per_poll=lambda ctx: len(plan_of(ctx)), count="requests", unit="polls/s",
        name=f"Modbus TCP poll rate, pipeline / bare pymodbus ({TAGS} tags)")]
