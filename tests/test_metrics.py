"""Prometheus metrics scraped over HTTP from a running agent process; no secret in any log or output."""

from __future__ import annotations

import asyncio
import json
import urllib.error

import pytest
from conftest import Collector, FrozenClock, free_port, modbus_line_config, write_config
from service_support import ServiceAgent, cli, http_get, metric, scrape
from test_e2e_modbus_mqtt import counted, start_simulator

PASSWORD = "Zx9-very-secret-broker-pw"


async def test_metrics_show_the_figures_of_a_running_agent(tmp_path, broker):
    port = free_port()
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"listen": f"127.0.0.1:{port}"})
    clock = FrozenClock(frozen=False)
    _machine, sim = await start_simulator(cfg, clock)
    agent = ServiceAgent(write_config(tmp_path / "agent.yaml", cfg), tmp_path / "agent.log")
    try:
        async with Collector(broker.port) as collector:
            agent.start()
            await collector.wait_for(lambda: counted(collector) > 5, 15, "some parts")
            await asyncio.sleep(1.5)
            m = await scrape(port)
            reads = metric(m, "edge_agent_device_reads_total", device="plc")
            assert reads and reads > 5
            assert metric(m, "edge_agent_device_errors_total", device="plc") == 0
            assert metric(m, "edge_agent_device_connected", device="plc") == 1
            assert metric(m, "edge_agent_poll_duration_seconds_count", device="plc") >= reads - 1
            assert 0 < metric(m, "edge_agent_poll_duration_seconds_sum", device="plc") < reads
            assert metric(m, "edge_agent_samples_total", device="plc") >= 2 * reads  # two tags per poll
            # 100 ms polls of two tags: about 20 samples/s
            assert 8 < metric(m, "edge_agent_samples_per_second") < 30
            assert metric(m, "edge_agent_events_total", type="count") >= 5
            assert metric(m, "edge_agent_output_deliveries_total", output="mqtt") >= 5
            assert metric(m, "edge_agent_output_connected", output="mqtt") == 1
            assert metric(m, "edge_agent_buffer_depth") is not None
            assert metric(m, "edge_agent_buffer_last_seq") >= 5
            states = [k for k in m if k[0] == "edge_agent_machine_state"]
            assert states and dict(states[0][1])["machine"] == "m1"

            # the broker goes away: the buffer fills and ages, retries are counted
            broker.stop()
            await asyncio.sleep(3.0)
            m = await scrape(port)
            assert metric(m, "edge_agent_output_connected", output="mqtt") == 0
            assert metric(m, "edge_agent_buffer_depth") > 0
            assert metric(m, "edge_agent_buffer_oldest_age_seconds") > 0.5
            assert metric(m, "edge_agent_output_retries_total", output="mqtt") >= 1
            broker.start()

            status = json.loads(await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/status"))
            assert status["devices"][0]["name"] == "plc"
            with pytest.raises(urllib.error.HTTPError) as e:
                await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/nothing")
            assert e.value.code == 404
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()


async def test_metrics_disabled_opens_no_port(tmp_path, broker):
    port = free_port()
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"enabled": False, "listen": f"127.0.0.1:{port}"})
    _machine, sim = await start_simulator(cfg, FrozenClock())
    agent = ServiceAgent(write_config(tmp_path / "agent.yaml", cfg), tmp_path / "agent.log")
    try:
        agent.start()
        await agent.wait_log("event=ready", 15)
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics", 2.0)
        assert "metrics_listening" not in agent.output()
        assert agent.stop() == 0
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()


async def test_no_password_in_logs_status_metrics_or_cli_output(tmp_path, monkeypatch):
    """The broker wants a password; mosquitto refuses a wrong one, so the agent logs failures."""
    import shutil
    import tempfile
    from pathlib import Path

    from conftest import Broker

    # mosquitto started as root reads its password file as user mosquitto: not from pytest's 0700 tmp_path
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-mq-"))
    workdir.chmod(0o755)
    request_cleanup = lambda: shutil.rmtree(workdir, ignore_errors=True)
    pwfile = workdir / "passwords"
    proc = await asyncio.create_subprocess_exec("mosquitto_passwd", "-b", "-c", str(pwfile), "agent", "not-it",
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if await proc.wait() != 0:
        pytest.skip("mosquitto_passwd not available")
    broker = Broker(workdir, extra=f"password_file {pwfile}\n")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    pwfile.chmod(0o644)
    broker.start()
    port = free_port()
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"listen": f"127.0.0.1:{port}"})
    cfg["outputs"]["mqtt"].update(username="agent", password="${MQTT_PASSWORD}")
    monkeypatch.setenv("MQTT_PASSWORD", PASSWORD)
    _machine, sim = await start_simulator(cfg, FrozenClock(frozen=False))
    config = write_config(tmp_path / "agent.yaml", cfg)
    agent = ServiceAgent(config, tmp_path / "agent.log", env={"MQTT_PASSWORD": PASSWORD})
    outputs = []
    try:
        agent.start()
        await agent.wait_log("event=mqtt_disconnected", 15)  # refused: not authorised
        await agent.wait_log("event=ready", 15)
        outputs.append(await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics"))
        outputs.append(await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/status"))
        env = {"MQTT_PASSWORD": PASSWORD}
        for args in (["status", "--config", str(config), "--json"], ["status", "--config", str(config)],
                     ["tags", "list", "--config", str(config), "--json"], ["validate", str(config)],
                     ["tags", "read", "--config", str(config), "--json"]):
            code, out, err = await cli(*args, env=env)
            assert code in (0, 1), (args, code, err)
            outputs += [out, err]
        # a reload with a broken config logs problems: still no password
        config.write_text(config.read_text() + "bogus: 1\n")
        agent.signal(1)  # SIGHUP
        await agent.wait_log("event=config_rejected", 10)
        assert agent.stop() == 0
        log = agent.output()
        assert "event=mqtt_disconnected" in log and "event=device_connected" in log
        for text in [log, *outputs]:
            assert PASSWORD not in text
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()
        sim.cancel()
        broker.stop()
        request_cleanup()


def test_log_filter_redacts_configured_secrets(caplog):
    """Defence in depth: whatever code logs a configured password, the line shows *** instead."""
    import logging

    import yaml

    from edge_agent.config import parse_config
    from edge_agent.status import RedactSecrets, secrets_of

    cfg = modbus_line_config(__import__("pathlib").Path("/tmp"), modbus_port=1502, mqtt_port=1883)
    cfg["outputs"]["mqtt"].update(username="agent", password=PASSWORD)
    secrets = secrets_of(parse_config(yaml.safe_dump(cfg)))
    assert secrets == [PASSWORD]
    handler = caplog.handler
    f = RedactSecrets(secrets)
    handler.addFilter(f)
    try:
        logging.getLogger("edge_agent.test").warning("event=oops error=%r", f"auth failed for {PASSWORD}")
    finally:
        handler.removeFilter(f)
    assert PASSWORD not in caplog.text and "auth failed for ***" in caplog.text
