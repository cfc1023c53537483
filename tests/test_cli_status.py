"""`edge-agent status` against a real running daemon (agent process, simulator, mosquitto)."""

from __future__ import annotations

import asyncio

from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from service_support import ServiceAgent, cli, status_json
from test_e2e_modbus_mqtt import counted, start_simulator


async def test_status_reports_devices_machines_buffer_and_outputs(tmp_path, broker):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, metrics={"enabled": False})
    clock = FrozenClock(frozen=False)
    _machine, sim = await start_simulator(cfg, clock)
    config = write_config(tmp_path / "agent.yaml", cfg)
    agent = ServiceAgent(config, tmp_path / "agent.log")
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: counted(collector) > 3, 15, "some parts")
            s = await status_json(config)
            assert s["pid"] == agent.proc.pid and s["ready"] and s["health"] == "ok"
            assert s["plant"] == {"site": "s1", "area": "a1", "line": "l1"}
            (dev,) = s["devices"]
            assert dev["name"] == "plc" and dev["connected"] and dev["reads"] > 3 and dev["errors"] == 0
            assert dev["last_ok"].endswith("Z") and dev["last_ok_age_s"] < 2
            (m,) = s["machines"]
            assert m["id"] == "m1" and m["state"] in ("executing", "not_executing")
            assert s["buffer"]["path"] == str(tmp_path / "buffer.db") and s["buffer"]["last_seq"] > 3
            (out,) = s["outputs"]
            assert out["name"] == "mqtt" and out["connected"] and out["delivered"] > 3
            assert out["last_delivery"].endswith("Z")

            code, text, err = await cli("status", "--config", str(config))
            assert code == 0, err
            for word in ("Devices", "plc", "Machines", "m1", "Buffer:", "Outputs", "mqtt", "health: ok"):
                assert word in text, (word, text)

            # broker gone: the buffer grows and ages, the output shows disconnected
            broker.stop()
            await asyncio.sleep(2.5)
            s = await status_json(config)
            assert not s["outputs"][0]["connected"]
            assert s["buffer"]["depth"] > 0 and s["buffer"]["oldest_age_s"] > 0.5
            broker.start()
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()
    code, _, err = await cli("status", "--config", str(config))
    assert code == 3 and "not running" in err


async def test_status_shows_an_unreachable_device(tmp_path, broker):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, metrics={"enabled": False})
    config = write_config(tmp_path / "agent.yaml", cfg)
    agent = ServiceAgent(config, tmp_path / "agent.log")
    try:
        agent.start()
        await agent.wait_log("event=device_unreachable", 15)
        await agent.wait_log("event=ready", 15)
        s = await status_json(config)
        (dev,) = s["devices"]
        assert not dev["connected"] and dev["errors"] >= 1 and dev["last_ok"] is None
        assert "connection refused" in dev["last_error"] or "cannot connect" in dev["last_error"]
        code, text, _ = await cli("status", "--config", str(config))
        assert code == 0 and "never" in text
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
