"""Poll rate through the full pipeline vs a bare library loop against the same server.

One server process per figure. Each run measures the agent (its own process, polling
as fast as it can: poll_interval 0.1 ms, with derivation, the SQLite buffer and MQTT
forwarding live) and the bare loop (bench/bare.py) for the same window, in alternating
turns (the other SIGSTOPped); the figure is the median of the per-pair ratios. Rates are
counted at the server (requests or values), the same way for both. Device timeouts are 5 s,
so a 1-2 s pause never looks like a dead connection.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.common import (
    Agent,
    Figure,
    LineProcess,
    Mosquitto,
    Settings,
    log,
    median,
    server,
    workdir,
    write_config,
)

WARMUP = 1.5
SETTLE = 0.3  # after SIGCONT, before a window


def _window(srv: LineProcess, seconds: float, key: str) -> float:
    a = srv.ask("stats")
    time.sleep(seconds)
    b = srv.ask("stats")
    return (b[key] - a[key]) / (b["t"] - a["t"])


def _wait_for_traffic(srv: LineProcess, timeout: float = 30.0) -> None:
    base = srv.ask("stats")["requests"]
    deadline = time.monotonic() + timeout
    while srv.ask("stats")["requests"] <= base:
        if time.monotonic() > deadline:
            raise TimeoutError("no requests reached the server")
        time.sleep(0.05)


def compare(s: Settings, *, key: str, kind: str, server_opts: dict, make_config: Callable[[Path, int, dict], dict],
            bare_opts: Callable[[dict, dict], dict], per_poll: Callable[[dict], int], count: str,
            unit: str, name: str, target: float = 0.8) -> Figure:
    """Agent and bare loop both connected; they take turns (the other one SIGSTOPped) for `pairs` windows.

    Interleaving short windows makes a slow drift of the shared machine hit both sides
    alike; each pair gives one ratio, the figure is their median.
    """
    pairs = s.pick(2 * s.runs, s.runs + 1)
    seconds = s.pick(2.0, 1.0)
    agent_rates, bare_rates, ratios = [], [], []
    cpu_s = wall_s = 0.0
    with workdir(key) as tmp:
        broker = Mosquitto(tmp)
        srv = server(kind, **server_opts)
        agent = bare = None
        try:
            info = srv.ready
            cfg = make_config(tmp, broker.port, info)
            from edge_agent.config import parse_config

            parsed = parse_config(yaml.safe_dump(cfg))
            n_per_poll = per_poll({"cfg": parsed})
            agent = Agent(write_config(tmp / "agent.yaml", cfg), tmp / "agent.log")
            _wait_for_traffic(srv)
            time.sleep(WARMUP)
            agent.proc.send_signal(signal.SIGSTOP)
            opts = bare_opts({"cfg": parsed, "info": info}, {"seconds": 600})
            bare = LineProcess(["-m", "bench.bare", kind, json.dumps(opts)], name=f"bare {kind}")
            _wait_for_traffic(srv)
            time.sleep(WARMUP)
            bare.proc.send_signal(signal.SIGSTOP)
            for r in range(pairs):
                rates: dict[str, float] = {}
                for which in (("agent", "bare") if r % 2 == 0 else ("bare", "agent")):
                    proc = agent.proc if which == "agent" else bare.proc
                    proc.send_signal(signal.SIGCONT)
                    time.sleep(SETTLE)
                    c0, t0 = (agent.cpu_seconds(), time.monotonic()) if which == "agent" else (0, 0)
                    rates[which] = _window(srv, seconds, count) / n_per_poll
                    if which == "agent":
                        cpu_s += agent.cpu_seconds() - c0
                        wall_s += time.monotonic() - t0
                    proc.send_signal(signal.SIGSTOP)
                if not agent.alive():
                    raise RuntimeError(agent.output()[-2000:])
                agent_rates.append(rates["agent"])
                bare_rates.append(rates["bare"])
                ratios.append(rates["agent"] / rates["bare"])
                log(f"{key} pair {r + 1}/{pairs}: agent {rates['agent']:.0f} {unit}, bare {rates['bare']:.0f} {unit}, "
                    f"ratio {ratios[-1]:.2f}")
            reconnects = agent.output().count("device_disconnected")
        finally:
            for p in (agent, bare):
                if p is not None and p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGCONT)
            if agent is not None:
                agent.stop()
            if bare is not None:
                bare.proc.kill()
                bare.proc.wait()
            srv.stop()
            broker.stop()
    ratio = median(ratios)
    return Figure(key, name, round(ratio, 3), "x bare", f">= {target}", ratio >= target, {
        "ratio_pairs": [round(x, 3) for x in ratios], "agent_rate_median": round(median(agent_rates), 1),
        "bare_rate_median": round(median(bare_rates), 1), "rate_unit": unit,
        "agent_cpu_pct": round(100 * cpu_s / wall_s, 1) if wall_s else None,
        "requests_or_values_per_poll": n_per_poll, "window_s": seconds, "pairs": pairs,
        "agent_reconnects": reconnects,
    }, note=f"agent {median(agent_rates):.0f} vs bare {median(bare_rates):.0f} {unit}")
