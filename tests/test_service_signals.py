"""Signals against a real agent process, a real simulator and a real mosquitto.

SIGHUP with an invalid config: rejected with a log line, the old pipeline keeps delivering.
SIGHUP with a valid config: the pipeline restarts with it; not one part is lost or counted twice.
SIGTERM with events in flight (broker down, machine producing): exit 0 within the stop timeout,
and after a restart every part arrives exactly once with gap-free seq.
"""

from __future__ import annotations

import asyncio
import signal
import time

import yaml
from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from service_support import ServiceAgent, metric, scrape
from test_e2e_modbus_mqtt import (
    assert_complete,
    counted,
    start_simulator,
    unique_events,
)

STOP_TIMEOUT = 20.0  # TimeoutStopSec in systemd/edge-agent.service


def agent_for(tmp_path, cfg, name="agent"):
    return ServiceAgent(write_config(tmp_path / f"{name}.yaml", cfg), tmp_path / f"{name}.log")


async def test_sighup_with_an_invalid_config_keeps_the_old_one_running(tmp_path, broker):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"listen": f"127.0.0.1:{free_port()}"})
    clock = FrozenClock(frozen=False)
    machine, sim = await start_simulator(cfg, clock)
    agent = agent_for(tmp_path, cfg)
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("count"), 15, "the first count")
            good_text = agent.config.read_text()
            agent.config.write_text(good_text.replace("poll_interval: 100ms", "poll_intervall: 100ms"))
            agent.signal(signal.SIGHUP)
            await agent.wait_log("event=config_rejected", 10)
            log = agent.output()
            assert "unknown key 'poll_intervall'" in log and "keeps running the old config" in log
            before = counted(collector)
            await collector.wait_for(lambda: counted(collector) > before + 5, 10, "parts after the rejected reload")
            clock.freeze()
            await collector.wait_for(lambda: counted(collector) >= machine.total, 15, f"{machine.total} parts")
            assert_complete(collector, machine.total)
            samples = await scrape(int(cfg["metrics"]["listen"].rsplit(":", 1)[1]))
            assert metric(samples, "edge_agent_config_reloads_total") == 0
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()


async def test_sighup_with_a_valid_config_restarts_the_pipeline_without_losing_events(tmp_path, broker):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"listen": f"127.0.0.1:{free_port()}"})
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    agent = agent_for(tmp_path, cfg)
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
            clock.run()  # the machine produces through the reload
            await asyncio.sleep(1.0)
            new = yaml.safe_load(agent.config.read_text())
            new["outputs"]["mqtt"]["topic_prefix"] = "reloaded"
            new["tags"].append({"name": "speed", "device": "plc", "address": "hr:20", "type": "float32"})
            agent.config.write_text(yaml.safe_dump(new, sort_keys=False))
            agent.signal(signal.SIGHUP)
            await agent.wait_log("event=config_reloaded", 15)
            await agent.wait_log("event=agent_started", 15, count=2)
            await asyncio.sleep(1.5)
            clock.freeze()
            await collector.wait_for(lambda: counted(collector) >= machine.total, 20, f"{machine.total} parts")
            assert_complete(collector, machine.total)  # exact count, seq gap-free across the restart
            topics = {t for t, _, _ in collector.messages}
            assert any(t.startswith("test/s1/a1/l1/m1/event/") for t in topics)
            assert any(t.startswith("reloaded/s1/a1/l1/m1/event/") for t in topics), "new config in effect"
            log = agent.output()
            assert log.count("event=agent_stopped") == 1 and "event=config_rejected" not in log
            port = int(cfg["metrics"]["listen"].rsplit(":", 1)[1])
            samples = await scrape(port)
            assert metric(samples, "edge_agent_config_reloads_total") == 1
            assert metric(samples, "edge_agent_device_reads_total", device="plc") > 0
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()


async def test_sigterm_with_events_in_flight_loses_nothing(tmp_path, broker):
    """Broker down, machine producing: events pile up in the queue and the buffer. SIGTERM must
    commit what is queued and exit 0 well within TimeoutStopSec; a restarted agent delivers it all."""
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"enabled": False})
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    first = agent_for(tmp_path, cfg, "first")
    second = agent_for(tmp_path, cfg, "second")
    try:
        async with Collector(broker.port) as collector:
            first.start()
            await collector.wait_for(lambda: collector.events("state"), 15, "the first state event")
            broker.stop()
            clock.run()
            await asyncio.sleep(2.0)
            in_flight = machine.total
            started = time.monotonic()
            first.signal(signal.SIGTERM)  # while the machine keeps producing and polls keep coming
            code = await asyncio.to_thread(first.proc.wait, STOP_TIMEOUT)
            took = time.monotonic() - started
            clock.freeze()
            assert code == 0 and took < STOP_TIMEOUT / 2, (code, took)
            assert in_flight > 10
            stored = int(first.output().split("event=agent_stopped events_stored=")[1].split()[0])
            assert stored > 1, "events were committed to the buffer, not lost with the process"
            seq_before = max((e["seq"] for e in unique_events(collector)), default=0)
            broker.start()
            second.start()
            await collector.wait_for(lambda: counted(collector) >= machine.total, 30, f"{machine.total} parts")
            assert_complete(collector, machine.total)
            assert max(e["seq"] for e in unique_events(collector)) > seq_before
        assert second.stop() == 0
        first.stop()
    finally:
        for a in (first, second):
            if a.proc and a.proc.poll() is None:
                a.kill()
        sim.cancel()


async def test_sighup_that_moves_the_buffer_is_rejected(tmp_path, broker):
    """Events waiting in the old buffer file would never be sent: moving it needs a restart."""
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, metrics={"enabled": False})
    _machine, sim = await start_simulator(cfg, FrozenClock())
    agent = agent_for(tmp_path, cfg)
    try:
        agent.start()
        await agent.wait_log("event=ready", 15)
        new = yaml.safe_load(agent.config.read_text())
        new["buffer"]["path"] = str(tmp_path / "elsewhere.db")
        agent.config.write_text(yaml.safe_dump(new, sort_keys=False))
        agent.signal(signal.SIGHUP)
        await agent.wait_log("event=config_rejected", 10)
        assert "buffer.path changed" in agent.output() and "event=config_reloaded" not in agent.output()
        assert not (tmp_path / "elsewhere.db").exists()
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()


async def test_a_bad_config_at_start_exits_2_with_a_log_line(tmp_path):
    from service_support import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("plant: {site: s, area: a, line: l}\nmachines: []\n")
    code, _out, err = await cli("run", "--config", str(bad))
    assert code == 2  # RestartPreventExitStatus=2: systemd does not restart into the same error
    assert f"{bad}:2: machines:" in err and f"event=config_error config={bad}" in err



async def test_a_pipeline_failure_surfaces_as_one_error_and_one_log_line(tmp_path, monkeypatch, caplog):
    """An agent that dies is reported as `event=agent_failed` and re-raised as the error itself (not
    a nested ExceptionGroup), so `edge-agent run` prints one line and exits 1 -> Restart=on-failure."""
    import logging

    import edge_agent.daemon
    from edge_agent.config import parse_config
    from edge_agent.errors import ConnectionLost
    from edge_agent.service import Notifier, Supervisor

    class Failing(edge_agent.daemon.Agent):
        async def run(self, stop):
            await asyncio.sleep(0.1)
            raise ConnectionLost("plc", "the PLC went up in smoke")

    monkeypatch.setattr(edge_agent.daemon, "Agent", Failing)
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=free_port(), metrics={"enabled": False})
    sup = Supervisor(parse_config(yaml.safe_dump(cfg)), notifier=Notifier(None), install_signals=False)
    caplog.set_level(logging.INFO, logger="edge_agent")
    try:
        await sup.run()
    except ConnectionLost as e:
        assert "went up in smoke" in str(e)
    else:
        raise AssertionError("the failure was swallowed")
    assert "event=agent_failed error='ConnectionLost: plc: the PLC went up in smoke'" in caplog.text
