"""OPC UA values/s through the full pipeline vs bare asyncua `read_values` (same server, same nodes).

500 variables (1 machine: run and counter, 498 UInt16), polled as fast as possible; the
server counts the nodes it reads (only nodes of the bench namespace).
"""

from __future__ import annotations

from bench.common import Figure, Settings, base_config
from bench.rates import compare
from bench.servers import NS

TAGS = 500


def config(tmp, mqtt_port, info):
    tags = [{"name": "m0_run", "device": "plc", "address": f"nsu={NS};s=m0.run", "type": "Boolean"},
            {"name": "m0_parts", "device": "plc", "address": f"nsu={NS};s=m0.parts", "type": "UInt32"}]
    tags += [{"name": f"v{i}", "device": "plc", "address": f"nsu={NS};s=v{i}", "type": "UInt16"}
             for i in range(TAGS - 2)]
    dev = {"name": "plc", "protocol": "opcua", "url": info["url"], "poll_interval": 0.0001, "timeout": "5s"}
    machines = [{"id": "m0", "signals": {"run": "m0_run", "part_counter": "m0_parts"}}]
    return base_config(tmp, mqtt_port, machines=machines, devices=[dev], tags=tags)


def bare(ctx, opts):
    idents = ["m0.run", "m0.parts"] + [f"v{i}" for i in range(TAGS - 2)]
    return {**opts, "url": ctx["info"]["url"], "namespace": NS, "identifiers": idents}


def run(s: Settings) -> list[Figure]:
    return [compare(
        s, key="opcua_rate", kind="opcua", server_opts={"machines": 1, "others": TAGS - 2, "counter": "rate", "hz": 10},
        make_config=config, bare_opts=bare, per_poll=lambda ctx: 1, count="values", unit="values/s",
        name=f"OPC UA values/s, pipeline / bare read_values ({TAGS} nodes)")]
