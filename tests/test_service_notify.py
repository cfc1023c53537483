"""sd_notify: READY=1 and WATCHDOG=1 from a real agent process on a real unix datagram socket
given as NOTIFY_SOCKET, and the watchdog withheld while the buffer writer is stuck."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import threading
import time

import yaml
from conftest import FrozenClock, free_port, modbus_line_config, write_config
from service_support import NotifySocket, ServiceAgent
from test_e2e_modbus_mqtt import start_simulator

from edge_agent.config import parse_config
from edge_agent.service import Notifier, Supervisor


def test_notifier_sends_to_a_path_and_to_the_abstract_namespace(tmp_path):
    for rx in (NotifySocket(path=tmp_path / "notify"), NotifySocket(abstract=f"edge-agent-test-{time.time_ns()}")):
        n = Notifier(rx.address)
        assert n.notify(READY=1, STATUS="up")
        assert rx.drain() == [{"READY": "1", "STATUS": "up"}]
        n.close()
        rx.close()


def test_notifier_from_env_honours_watchdog_pid():
    import os

    n = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval == 2.0
    assert Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_usec is None
    off = Notifier.from_env({})
    assert not off.enabled and off.notify(READY=1) is False


async def test_ready_after_first_poll_and_watchdog_from_a_real_agent(tmp_path, broker):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"enabled": False})
    clock = FrozenClock()
    _, sim = await start_simulator(cfg, clock)
    rx = NotifySocket(path=tmp_path / "notify.sock")
    agent = ServiceAgent(write_config(tmp_path / "agent.yaml", cfg), tmp_path / "agent.log",
                         env={"NOTIFY_SOCKET": rx.address, "WATCHDOG_USEC": "1000000"})
    agent.start()
    try:
        await rx.wait_for("READY", 20)
        (_, ready), = rx.with_key("READY")
        assert ready["READY"] == "1" and ready["MAINPID"] == str(agent.proc.pid)
        assert ready["STATUS"] == "polling 1 device(s)", "READY only once the device had its first poll"
        log = agent.output()
        assert log.index("event=device_connected") < log.index("event=ready")
        assert "event=agent_started" in log  # the buffer is open before the tasks start
        # WatchdogSec=1s -> a ping every 0.5 s while healthy
        first = len(rx.with_key("WATCHDOG"))
        await asyncio.sleep(3.0)
        pings = [t for t, _ in rx.with_key("WATCHDOG")][first:]
        assert len(pings) >= 4, f"{len(pings)} watchdog pings in 3 s"
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0, gaps
        started = time.monotonic()
        agent.signal(signal.SIGTERM)
        await rx.wait_for("STOPPING", 10)
        assert await asyncio.to_thread(agent.proc.wait, 20) == 0  # within TimeoutStopSec=20s
        assert time.monotonic() - started < 20
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        rx.close()
        sim.cancel()


async def test_ready_is_not_held_back_forever_by_a_dead_device(tmp_path, monkeypatch):
    """A PLC that never answers must not keep the unit "activating" until systemd kills it."""
    from edge_agent import service

    monkeypatch.setattr(service, "READY_AFTER", 1.0)
    import socket

    silent = socket.socket()  # accepts connections (kernel backlog) but never answers a request
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    cfg = modbus_line_config(tmp_path, modbus_port=silent.getsockname()[1], mqtt_port=free_port(),
                             metrics={"enabled": False})
    cfg["devices"][0]["timeout"] = "5s"  # the first read is still waiting when READY is due
    rx = NotifySocket(path=tmp_path / "n.sock")
    sup = Supervisor(parse_config(yaml.safe_dump(cfg)), notifier=Notifier(rx.address), install_signals=False)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(sup.run())
        await rx.wait_for("READY", 10)
        (_, ready), = rx.with_key("READY")
        assert ready["STATUS"] == "polling 1 device(s); no answer yet from plc"
        sup.request_stop()
        await run
    rx.close()
    silent.close()


async def test_watchdog_withheld_while_the_buffer_writer_is_stuck(tmp_path, broker, caplog):
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port, metrics={"enabled": False})
    clock = FrozenClock()
    _, sim = await start_simulator(cfg, clock)
    rx = NotifySocket(path=tmp_path / "n.sock")
    sup = Supervisor(parse_config(yaml.safe_dump(cfg)), notifier=Notifier(rx.address, 400_000),
                     install_signals=False)
    caplog.set_level(logging.INFO, logger="edge_agent")
    release = threading.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(sup.run())
            await rx.wait_for("READY", 15)
            await rx.wait_for("WATCHDOG", 5, count=3)
            # wedge the buffer's single writer thread, as a hung disk would
            sup.agent.buffer._executor.submit(release.wait, 30)
            stuck_at = time.monotonic()
            await asyncio.sleep(7.0)  # > BUFFER_TIMEOUT (5 s)
            late = [t for t, _ in rx.with_key("WATCHDOG") if t > stuck_at + 5.5]
            assert late == [], f"watchdog fed {len(late)} times while the buffer writer was stuck"
            assert "event=watchdog_withheld reason='buffer writer did not answer within 5s'" in caplog.text
            release.set()
            resumed = len(rx.with_key("WATCHDOG"))
            await rx.wait_for("WATCHDOG", 10, count=resumed + 2)
            assert "event=watchdog_resumed" in caplog.text
            sup.request_stop()
            await run
    finally:
        release.set()
        rx.close()
        sim.cancel()


async def test_status_and_metrics_requests_during_reloads_never_hurt_the_agent(tmp_path, broker, caplog):
    """Clients asking while the pipeline is torn down and rebuilt get an answer (or a closed
    connection), never an exception that takes the supervisor down; the watchdog is not withheld."""
    from conftest import write_config
    from service_support import http_get

    from edge_agent.config import load_config
    from edge_agent.status import query, socket_path

    port = free_port()
    cfg = modbus_line_config(tmp_path, modbus_port=free_port(), mqtt_port=broker.port,
                             metrics={"listen": f"127.0.0.1:{port}"})
    _, sim = await start_simulator(cfg, FrozenClock(frozen=False))
    path = write_config(tmp_path / "agent.yaml", cfg)
    parsed = load_config(path)
    rx = NotifySocket(path=tmp_path / "n.sock")
    sup = Supervisor(parsed, config_path=path, notifier=Notifier(rx.address, 400_000), install_signals=False)
    caplog.set_level(logging.INFO, logger="edge_agent")
    answers = {"status": 0, "metrics": 0}

    async def ask(until: float) -> None:
        while time.monotonic() < until:
            try:
                _, report = await asyncio.to_thread(query, [socket_path(parsed)], 5.0)
                assert report["plant"]["site"] == "s1"
                answers["status"] += 1
                text = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
                assert "edge_agent_info" in text
                answers["metrics"] += 1
            except ConnectionError:
                pass  # the pipeline was being rebuilt at that moment
            await asyncio.sleep(0.01)

    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(sup.run())
            await rx.wait_for("READY", 15)
            until = time.monotonic() + 4.0
            asker = tg.create_task(ask(until))

            async def pump() -> None:  # read the socket as promptly as systemd does (its queue holds ~10)
                while not run.done():
                    rx.drain()
                    await asyncio.sleep(0.02)

            tg.create_task(pump())
            for _ in range(4):
                sup.request_reload()
                await asyncio.sleep(0.8)
            await asker
            assert sup.reloads == 4 and not run.done()
            await rx.wait_for("READY", 15, count=5)  # READY=1 again after every reload
            sup.request_stop()
            await run
        assert len(rx.with_key("RELOADING")) == 4
        # what a request sees in the instant the old pipeline's buffer is already closed
        from edge_agent.status import snapshot

        report = await snapshot(sup)
        assert report["buffer"]["error"].startswith("buffer unavailable"), report["buffer"]
    finally:
        rx.close()
        sim.cancel()
    assert answers["status"] > 10 and answers["metrics"] > 10, answers
    assert "watchdog_withheld" not in caplog.text
    assert caplog.text.count("event=config_reloaded") == 4


def test_poll_progress_rule_flags_only_a_device_that_stopped_moving():
    """The watchdog's poll-loop rule: a device whose reads+errors do not change for
    max(60 s, 4 x (poll interval + read guard)) is stuck; a failing device still moves."""
    from types import SimpleNamespace

    from drivers.base import Health
    from edge_agent.service import _DeviceProgress

    def driver(name, poll=1.0, timeout=1.0, mode="poll"):
        return SimpleNamespace(device=SimpleNamespace(name=name, poll_interval=poll, timeout=timeout, mode=mode),
                               health=Health(), plan=[object()])

    ok, failing, stuck, slow, sub = (driver("ok"), driver("failing"), driver("stuck"),
                                     driver("slow", poll=30.0), driver("sub", mode="subscribe"))
    agent = SimpleNamespace(drivers=[ok, failing, stuck, slow, sub])
    progress = _DeviceProgress()
    assert progress.stale(agent, 0.0) == []
    for t in range(1, 200):
        ok.health.reads += 1
        failing.health.errors += t % 20 == 0  # a dead PLC: one failed connect per backoff round
        stale = progress.stale(agent, float(t))
        if t <= 60:
            assert stale == [], t
        elif t <= 132:  # slow's bound: 4 x (30 s poll + 3 s read guard)
            assert stale == ["stuck"], t
    # neither stuck nor slow ever moved; a subscription is exempt (its keepalive is the driver's job)
    assert progress.stale(agent, 199.0) == ["stuck", "slow"]
