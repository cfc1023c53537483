"""`edge-agent order set|clear` and `downtime classify` reach a running agent through the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from conftest import ROOT, Collector, FrozenClock, free_port, modbus_line_config, write_config
from test_e2e_modbus_mqtt import start_simulator, unique_events


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}  # no wrapping inside rich's error box
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


async def test_order_commands_from_the_cli_change_the_order_on_every_event(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock(frozen=False)
    machine, sim = await start_simulator(cfg, clock)
    config = write_config(tmp_path / "agent.yaml", cfg)
    agent = agent_factory(config)
    try:
        async with Collector(broker.port) as mes:
            agent.start()
            await mes.wait_for(lambda: mes.events("state"), 15, "the first state event")
            sent = await asyncio.to_thread(cli, "order", "set", "4711", "--config", str(config), "--article", "A-1",
                                           "--ideal-cycle-time", "0.05")
            assert sent.returncode == 0, sent.stderr
            assert "test/s1/a1/l1/m1/cmd/set_order" in sent.stdout
            await mes.wait_for(lambda: mes.events("order"), 10, "the order event")
            order = mes.events("order")[0]
            assert order["order"]["id"] == "4711" and order["order"]["article"] == "A-1"
            await mes.wait_for(lambda: any(e.get("order") and e["order"]["id"] == "4711" for e in mes.events("count")),
                               10, "a count under order 4711")
            sent = await asyncio.to_thread(cli, "order", "clear", "--config", str(config))
            assert sent.returncode == 0, sent.stderr
            await mes.wait_for(lambda: mes.events("order_summary"), 10, "the summary of order 4711")
            summary = mes.events("order_summary")[0]
            assert summary["order"]["id"] == "4711" and summary["total"] >= 1
            assert summary["good"] + summary["scrap"] == summary["total"]
            seqs = [e["seq"] for e in unique_events(mes)]
            assert sorted(seqs) == list(range(1, len(seqs) + 1))
    finally:
        agent.stop()
        sim.cancel()


def test_bad_command_arguments_are_refused_before_sending(tmp_path):
    config = write_config(tmp_path / "agent.yaml",
                          modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=free_port()))
    both = cli("downtime", "classify", "--config", str(config), "--downtime-id", "x", "--event-id", "y",
               "--reason", "r")
    assert both.returncode == 2 and "exactly one of --downtime-id or --event-id" in both.stderr
    unknown = cli("order", "set", "1", "--config", str(config), "--machine", "nope")
    assert unknown.returncode == 2 and "no machine 'nope'" in unknown.stderr
    nobroker = cli("order", "set", "1", "--config", str(config))
    assert nobroker.returncode == 1 and "cannot reach the broker" in nobroker.stderr
