"""Small pieces of delivery: TLS defaults, protocol option, HTTPS URL rule, keys, historical mark, rate limit."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from delivery_support import HttpsServer, make_pki
from pydantic import ValidationError

from buffer import AsyncBuffer, NewEvent
from edge_agent.config import HttpsOutput, MqttOutput, Tls
from edge_agent.forwarding.https import HttpsForwarder, idempotency_key
from edge_agent.forwarding.replay import TokenBucket, mark_historical


@pytest.mark.parametrize("host, tls, expect_tls, port", [
    ("mes-broker.plant.example", None, True, 8883),  # off loopback: TLS with verification by default
    ("10.0.3.7", None, True, 8883),
    ("127.0.0.1", None, False, 1883),
    ("localhost", None, False, 1883),
    ("10.0.3.7", False, False, 1883),  # explicit opt-out
    ("127.0.0.1", True, True, 8883),
    ("10.0.3.7", {"ca_file": "/etc/ca.pem"}, True, 8883),
])
def test_mqtt_tls_is_on_by_default_off_loopback(host, tls, expect_tls, port):
    cfg = MqttOutput(host=host, tls=tls)
    assert (cfg.effective_tls is not None) == expect_tls and cfg.effective_port == port
    if expect_tls:
        assert cfg.effective_tls.insecure is False


def test_mqtt_protocol_option():
    assert MqttOutput(host="127.0.0.1").protocol == "3.1.1"
    assert MqttOutput(host="127.0.0.1", protocol=5).protocol == "5"
    assert MqttOutput(host="127.0.0.1", protocol="3.1.1").protocol == "3.1.1"
    with pytest.raises(ValidationError):
        MqttOutput(host="127.0.0.1", protocol="3.1")


def test_https_url_must_be_https_off_loopback():
    HttpsOutput(url="https://mes.example/api")
    HttpsOutput(url="http://127.0.0.1:8080/api")
    with pytest.raises(ValidationError, match="use https://"):
        HttpsOutput(url="http://mes.example/api")


def test_idempotency_key_depends_on_line_and_seq_range_only():
    from buffer import Row

    rows = [Row(s, f"id{s}", "count", 0.0, "t", b"{}") for s in (7, 8, 9)]
    same = [Row(s, f"other{s}", "count", 1.0, "t", b"{}") for s in (7, 8, 9)]
    assert idempotency_key("s/a/l", rows) == idempotency_key("s/a/l", same)
    assert idempotency_key("s/a/l", rows) != idempotency_key("s/a/l2", rows)
    assert idempotency_key("s/a/l", rows) != idempotency_key("s/a/l", rows[:2])
    assert idempotency_key("s/a/l", rows).startswith("ea-7-9-")


def test_historical_mark_keeps_the_committed_fields():
    payload = json.dumps({"event_id": "e", "seq": 3, "count": 1}, separators=(",", ":")).encode()
    marked = json.loads(mark_historical(payload))
    assert marked == {"event_id": "e", "seq": 3, "count": 1, "historical": True}


async def test_token_bucket_limits_the_rate():
    bucket = TokenBucket(200)
    t = time.monotonic()
    for _ in range(10):
        await bucket.take(100)  # 1000 tokens; 200 saved up: 800 more at 200/s = 4 s
    assert 3.5 < time.monotonic() - t < 5.0


async def test_https_wrong_ca_is_refused_with_a_clear_error(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "edge_agent.forwarding.https")
    pki = make_pki(tmp_path / "pki")
    server = HttpsServer(pki)
    buf = await AsyncBuffer(tmp_path / "b.db").open()
    await buf.register_outputs(["https"])
    await buf.append([NewEvent("count", 1.0, "t/event/count", {"type": "count"})])
    cfg = HttpsOutput(url=server.url, timeout=2, tls=Tls(ca_file=pki.other_ca))
    fwd = HttpsForwarder(cfg, buf, line="s/a/l")
    task = asyncio.create_task(fwd.run())
    try:
        async with asyncio.timeout(10):
            while "not trusted" not in caplog.text:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text and fwd.delivered == 0 and not server.requests
    assert (await buf.stats())["depth"] == 1, "nothing leaves the buffer"
    await buf.close()
    server.close()


async def test_commits_stay_batched_under_load(tmp_path, broker):
    """One transaction per derivation batch: at most one commit per poll cycle (plus the 1 s tick)."""
    import yaml
    from conftest import FrozenClock, free_port, modbus_line_config
    from delivery_support import start_simulator

    from edge_agent.config import parse_config
    from edge_agent.daemon import Agent

    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, poll="20ms")
    clock = FrozenClock(frozen=False)
    _, sim = await start_simulator(cfg, clock, cycle_time=0.002)  # ~500 parts/s, every poll sees parts
    agent = Agent(parse_config(yaml.safe_dump(cfg)))
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await asyncio.wait_for(agent.ready.wait(), 10)
    await asyncio.sleep(0.5)
    m0 = agent.buffer.metrics
    commits0, events0, t0 = m0.commits, m0.events_stored, time.monotonic()
    await asyncio.sleep(3)
    m = agent.buffer.metrics
    commits, events, seconds = m.commits - commits0, m.events_stored - events0, time.monotonic() - t0
    stop.set()
    await asyncio.wait_for(run, 15)
    sim.cancel()
    polls = seconds / 0.02
    assert events > 50, f"only {events} events"
    assert commits <= polls * 1.1 + seconds + 5, f"{commits} commits for {polls:.0f} polls: more than one per cycle"
    print(f"{events} events in {commits} commits over {seconds:.1f}s ({polls:.0f} polls)")


async def test_tls_against_a_plain_port_says_what_to_do(broker, tmp_path, caplog):
    """TLS is on by default off loopback: pointed at a plain listener, the log says why and what to change."""
    from edge_agent.forwarding.mqtt import MqttForwarder

    caplog.set_level(logging.WARNING, "edge_agent.forwarding.mqtt")
    buf = await AsyncBuffer(tmp_path / "b.db").open()
    await buf.register_outputs(["mqtt"])
    fwd = MqttForwarder(MqttOutput(host="127.0.0.1", port=broker.port, tls=True, timeout=2), buf,
                        client_id="t", status_topic="t/status")
    task = asyncio.create_task(fwd.run())
    try:
        async with asyncio.timeout(10):
            while "mqtt_disconnected" not in caplog.text:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await buf.close()
    assert "may not speak TLS on this port" in caplog.text and "tls: false" in caplog.text, caplog.text
