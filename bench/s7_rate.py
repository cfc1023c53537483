"""S7 poll rate through the full pipeline vs a bare python-snap7 read loop (same server, same requests).

100 tags in DB1 (1 machine: run bit and UDINT counter, 98 INTs) make one contiguous
range: one read job with one item per poll, so the bare loop is `db_read` back to back.
"""

from __future__ import annotations

from bench.common import Figure, Settings, base_config
from bench.rates import compare

TAGS = 100


def config(tmp, mqtt_port, info):
    tags = [{"name": "m0_run", "device": "plc", "address": "DB1.DBX0.0", "type": "BOOL"},
            {"name": "m0_parts", "device": "plc", "address": "DB1.DBD2", "type": "UDINT"}]
    tags += [{"name": f"v{i}", "device": "plc", "address": f"DB1.DBW{6 + 2 * i}", "type": "INT"}
             for i in range(TAGS - 2)]
    dev = {"name": "plc", "protocol": "s7", "host": "127.0.0.1", "port": info["port"],
           "poll_interval": 0.0001, "timeout": "5s"}
    machines = [{"id": "m0", "signals": {"run": "m0_run", "part_counter": "m0_parts"}}]
    return base_config(tmp, mqtt_port, machines=machines, devices=[dev], tags=tags)


def plan_of(ctx):
    from drivers.s7.address import parse
    from drivers.s7.planner import plan

    cfg = ctx["cfg"]
    return plan([(t.name, parse(t.address, t.type)) for t in cfg.tags], 480)


def bare(ctx, opts):
    p = plan_of(ctx)
    items = [(i.db, i.start, i.size) for r in p.requests for i in r.items]
    if len(items) != len(p.requests):
        raise RuntimeError("the S7 bench map must plan one item per request")
    return {**opts, "port": ctx["info"]["port"], "plan": items}


def run(s: Settings) -> list[Figure]:
    return [compare(
        s, key="s7_rate", kind="s7", server_opts={"machines": 1, "others": TAGS - 2, "counter": "rate", "hz": 10},
        make_config=config, bare_opts=bare, per_poll=lambda ctx: len(plan_of(ctx).requests), count="requests",
        unit="polls/s", name=f"S7 poll rate, pipeline / bare python-snap7 ({TAGS} tags)")]
