"""MQTT output against a real mosquitto: status/LWT, TLS (wrong CA refused, mTLS), MQTT 5, replay.

The agent is a real process (`python -m edge_agent run`), the PLC the in-process simulator.
"""

from __future__ import annotations

import asyncio
import time

from conftest import (
    Broker,
    Collector,
    FrozenClock,
    free_port,
    modbus_line_config,
    wait_port,
    write_config,
)
from delivery_support import (
    PropsCollector,
    check_complete,
    make_pki,
    mosquitto_tls_listener,
    start_simulator,
)

from edge_agent import __version__

STATUS = "test/s1/a1/l1/status"


def counted(events: list[dict]) -> int:
    seen: dict[str, dict] = {}
    for e in events:
        seen.setdefault(e["event_id"], e)
    return sum(e["count"] for e in seen.values() if e["type"] == "count")


async def test_status_is_retained_online_and_offline_is_the_last_will(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    _, sim = await start_simulator(cfg, FrozenClock())
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    agent.start()
    async with Collector(broker.port, STATUS) as c:
        await c.wait_for(lambda: any(p.get("status") == "online" for _, p, _ in c.messages), 15, "online")
    # a late subscriber gets the retained status
    async with Collector(broker.port, STATUS) as late:
        await late.wait_for(lambda: late.messages, 5, "the retained status")
        _, online, retained = late.messages[-1]
        assert retained and online["status"] == "online" and online["version"] == __version__
        assert online["started"].endswith("Z")
        agent.kill()  # no DISCONNECT: the broker publishes the Last Will
        await late.wait_for(lambda: late.messages[-1][1].get("status") == "offline", 10, "offline (Last Will)")
    async with Collector(broker.port, STATUS) as later:
        await later.wait_for(lambda: later.messages, 5, "the retained status")
        assert later.messages[-1][1]["status"] == "offline" and later.messages[-1][2], "offline is retained"
    sim.cancel()


async def test_tls_wrong_ca_is_refused_with_a_clear_error_and_mtls_delivers(tmp_path, agent_factory):
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    (tmp_path / "mq").mkdir()
    broker = Broker(tmp_path / "mq", extra=mosquitto_tls_listener(tls_port, pki, require_certificate=True))
    broker.start()
    wait_port(tls_port)
    try:
        cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=tls_port)
        clock = FrozenClock(frozen=False)
        machine, sim = await start_simulator(cfg, clock)
        wrong = dict(cfg["outputs"]["mqtt"], tls={"ca_file": str(pki.other_ca), "cert_file": str(pki.client_cert),
                                                   "key_file": str(pki.client_key)})
        agent = agent_factory(write_config(tmp_path / "wrong.yaml", {**cfg, "outputs": {"mqtt": wrong}}))
        async with Collector(broker.port) as c:
            agent.start()
            deadline = time.monotonic() + 15
            while "not trusted" not in agent.output() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            agent.stop()
            out = agent.output()
            assert "event=mqtt_disconnected" in out and "TLS: the server's certificate is not trusted" in out, out[-2000:]
            assert "CERTIFICATE_VERIFY_FAILED" in out
            assert not c.events(), "nothing may be sent to an unverified broker"

            no_cert = dict(cfg["outputs"]["mqtt"], tls={"ca_file": str(pki.ca)})
            agent = agent_factory(write_config(tmp_path / "nocert.yaml", {**cfg, "outputs": {"mqtt": no_cert}}))
            agent.start()
            await asyncio.sleep(3)
            agent.stop()
            assert "event=mqtt_connected" not in agent.output(), "the broker requires a client certificate"
            assert not c.events()

            good = dict(cfg["outputs"]["mqtt"], tls={"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                                                     "key_file": str(pki.client_key)})
            agent = agent_factory(write_config(tmp_path / "good.yaml", {**cfg, "outputs": {"mqtt": good}}))
            agent.start()
            await c.wait_for(lambda: c.events("state"), 20, "events over mutual TLS")
            clock.freeze()
            await c.wait_for(lambda: counted(c.events()) >= machine.total, 20, f"{machine.total} parts")
            check_complete(c.events(), machine.total)
            assert "tls=True" in agent.output()
            agent.stop()
        sim.cancel()
    finally:
        broker.stop()


async def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_broker_down_30s_with_agent_restart_during_the_outage_loses_nothing(tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port)
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    config = write_config(tmp_path / "agent.yaml", cfg)
    async with Collector(broker.port) as c:
        first = agent_factory(config)
        first.start()
        await c.wait_for(lambda: c.events("state"), 15, "the first state event")
        clock.run()
        await asyncio.sleep(1.0)
        broker.stop()
        t0 = time.monotonic()
        at_outage = machine.total
        await asyncio.sleep(12)
        first.kill()  # the agent dies during the outage, with a backlog in its buffer
        second = agent_factory(config)
        second.start()
        await asyncio.sleep(30 - (time.monotonic() - t0))
        assert machine.total - at_outage > 200, "the machine kept producing during the outage"
        broker.start()
        await asyncio.sleep(2.0)
        clock.freeze()
        await c.wait_for(lambda: counted(c.events()) >= machine.total, 60, f"{machine.total} parts")
        uniq = check_complete(c.events(), machine.total)
        historical = [e for e in uniq if e.get("historical")]
        assert len(historical) > 100, "events stored during the outage are replayed marked historical"
        assert all(e["seq"] < max(x["seq"] for x in uniq) for e in historical)
    assert second.proc.poll() is None, "the agent kept running"
    second.stop()
    sim.cancel()


async def test_broker_that_stops_answering_never_hangs_the_agent(tmp_path, broker, agent_factory):
    import os
    import signal

    mqtt = {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "test", "timeout": "2s", "keepalive": "5s"}
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, outputs={"mqtt": mqtt})
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with Collector(broker.port) as c:
        agent.start()
        await c.wait_for(lambda: c.events("state"), 15, "the first state event")
        clock.run()
        await asyncio.sleep(1.0)
        os.kill(broker.proc.pid, signal.SIGSTOP)  # the TCP connection stays up; nothing answers
        try:
            await asyncio.sleep(8)
            out = agent.output()
            assert "Operation timed out" in out or "timed out" in out, "publishes must time out, not hang"
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        await asyncio.sleep(1.0)
        clock.freeze()
        await c.wait_for(lambda: counted(c.events()) >= machine.total, 40, f"{machine.total} parts")
        check_complete(c.events(), machine.total)
        caught_up = time.monotonic() - resumed
    assert agent.proc.poll() is None
    agent.stop()
    sim.cancel()
    print(f"caught up {caught_up:.1f}s after SIGCONT")


async def test_buffer_cap_reached_during_a_long_outage_keeps_running_and_the_gap_is_exact(
        tmp_path, broker, agent_factory):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             buffer={"path": str(tmp_path / "buffer.db"), "max_bytes": "56kB"})
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock, cycle_time=0.02)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with Collector(broker.port) as c:
        agent.start()
        await c.wait_for(lambda: c.events("state"), 15, "the first state event")
        broker.stop()
        clock.run()
        await asyncio.sleep(6)
        clock.freeze()
        await asyncio.sleep(1.0)
        assert "event=buffer_shed reason=buffer_full" in agent.output()
        assert agent.proc.poll() is None, "the agent keeps running at the cap"
        broker.start()
        await c.wait_for(lambda: c.events("gap"), 30, "the gap event")
        await asyncio.sleep(3)
        top = max(e["seq"] for e in c.events())
        await c.wait_for(lambda: len({e["seq"] for e in c.events()}) + sum(
            g["count"] for g in unique_gaps(c)) >= top, 30, "all rows or their gaps")
    uniq = check_complete(c.events(), machine.total, allow_gaps=True)
    arrived = {e["seq"] for e in uniq}
    named: set[int] = set()
    for g in unique_gaps(c):
        assert g["reason"] == "buffer_full"
        for d in g["dropped"]:
            seqs = {s for a, z in d["seq_ranges"] for s in range(a, z + 1)}
            assert len(seqs) == d["count"] and min(seqs) == d["from_seq"] and max(seqs) == d["to_seq"]
            assert not (seqs & named), "a row is named in one gap event only"
            named |= seqs
    assert not (arrived & named), "a dropped row never arrives"
    assert arrived | named == set(range(1, max(arrived | named) + 1)), "every seq arrived or is named in a gap"
    dropped_counts = sum(d["count"] for g in unique_gaps(c) for d in g["dropped"] if d["type"] == "count")
    got = sum(e["count"] for e in uniq if e["type"] == "count")
    assert got < machine.total and dropped_counts > 0
    agent.stop()
    sim.cancel()


def unique_gaps(c: Collector) -> list[dict]:
    return list({g["event_id"]: g for g in c.events("gap")}.values())


async def test_mqtt5_replay_is_rate_limited_marked_historical_and_live_events_are_not_starved(
        tmp_path, broker, agent_factory):
    mqtt = {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "test", "timeout": "3s", "protocol": 5,
            "replay_rate": 40, "historical_after": "1s"}
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, outputs={"mqtt": mqtt})
    clock = FrozenClock()
    machine, sim = await start_simulator(cfg, clock)
    agent = agent_factory(write_config(tmp_path / "agent.yaml", cfg))
    async with PropsCollector(broker.port) as c:
        agent.start()
        await wait_until(lambda: c.events(), 15, "the first event")
        clock.run()
        broker.stop()
        await asyncio.sleep(6)
        broker.start()
        await wait_until(lambda: agent.output().count("event=mqtt_connected") >= 2, 40, "the reconnect")
        await asyncio.sleep(4)  # live production while the backlog replays
        clock.freeze()
        await wait_until(lambda: counted(c.events()) >= machine.total, 40, f"{machine.total} parts")
    uniq = check_complete(c.events(), machine.total)
    assert "protocol=5" in agent.output()
    hist = [(t, p, props) for (tp, p, props, _), t in zip(c.messages, c.arrived)
            if "/event/" in tp and isinstance(p, dict) and p.get("historical")]
    assert all(props.get("historical") == "true" for _, _, props in hist), "MQTT 5: also a user property"
    hist_unique = {p["event_id"]: t for t, p, _ in hist}
    n = len(hist_unique)
    assert n > 100, f"a backlog of {n} historical events"
    span = max(hist_unique.values()) - min(hist_unique.values())
    assert span >= (n - 40) / 40 * 0.8, f"{n} historical events in {span:.1f}s: faster than 40/s"
    order = [p["seq"] for t, p, _ in sorted(hist, key=lambda x: x[0])]
    assert order == sorted(order), "the backlog replays in original order"
    live = [t for (tp, p, props, _), t in zip(c.messages, c.arrived)
            if "/event/" in tp and isinstance(p, dict) and not p.get("historical") and p["seq"] > max(
                x["seq"] for _, x, _ in hist)]
    dbg = [(round(t - c.arrived[0], 2), p["seq"], bool(p.get("historical"))) for (tp, p, _, _), t in
           zip(c.messages, c.arrived) if "/event/" in tp and isinstance(p, dict)]
    assert live and min(live) < max(hist_unique.values()) - 1.0, f"live events arrive while the backlog replays {dbg}"
    agent.stop()
    sim.cancel()
    print(f"replayed {n} historical events in {span:.1f}s; {len(uniq)} events in all")


async def test_mqtt_username_and_password_come_from_the_environment(tmp_path, agent_factory, monkeypatch):
    import os
    import shutil
    import subprocess

    import aiomqtt

    (tmp_path / "mq").mkdir()
    pw = tmp_path / "mq" / "passwd"
    await asyncio.to_thread(subprocess.run, [shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-c",
                                             "-b", str(pw), "line3", "pa55-word"], check=True, capture_output=True)
    broker = Broker(tmp_path / "mq", extra=("user root\n" if os.geteuid() == 0 else "")
                    + f"allow_anonymous false\npassword_file {pw}\n")
    broker.start()
    try:
        mqtt = {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "test", "timeout": "3s",
                "username": "${EA_MQTT_USER}", "password": "${EA_MQTT_PASSWORD}"}
        cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, outputs={"mqtt": mqtt})
        monkeypatch.setenv("EA_MQTT_USER", "line3")
        monkeypatch.setenv("EA_MQTT_PASSWORD", "wr0ng-Secret")
        _, sim = await start_simulator(cfg, FrozenClock())
        config = write_config(tmp_path / "agent.yaml", cfg)
        agent = agent_factory(config)
        agent.start()
        await wait_until(lambda: "refused the credentials" in agent.output(), 15, "the refusal")
        agent.stop()
        assert "wr0ng-Secret" not in agent.output(), "the password is never logged"
        monkeypatch.setenv("EA_MQTT_PASSWORD", "pa55-word")
        agent = agent_factory(config)
        agent.start()
        await wait_until(lambda: "event=mqtt_connected" in agent.output(), 15, "the connect")
        async with aiomqtt.Client("127.0.0.1", broker.port, username="line3", password="pa55-word",
                                  identifier="t-auth", timeout=5) as client:
            await client.subscribe(STATUS, qos=1)
            async with asyncio.timeout(5):
                async for m in client.messages:
                    assert m.retain and b'"online"' in bytes(m.payload)
                    break
        agent.stop()
        sim.cancel()
    finally:
        broker.stop()
