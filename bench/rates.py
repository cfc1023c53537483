"""Poll rate through the full pipeline vs a bare library loop against the same server.

One server process per figure. Each run measures the agent (its own process, polling
as fast as it can: poll_interval 0.1 ms, with derivation, the SQLite buffer and MQTT
forwarding live) and the bare loop (bench/bare.py) for the same window, in alternating
order; the figure is the median of the per-run ratios. Rates are counted at the server
(requests or values), the same way for both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.common import (
    Agent, Figure, LineProcess, Mosquitto, Settings, cpu_rss_window, log, median, server, workdir, write_config,
)

WARMUP = 1.5


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
    runs = s.runs
    seconds = s.pick(5.0, 2.5)
    agent_rates, bare_rates, ratios, cpu = [], [], [], []
    with workdir(key) as tmp:
        broker = Mosquitto(tmp)
        srv = server(kind, **server_opts)
        try:
            info = srv.ready
            cfg = make_config(tmp, broker.port, info)
            from edge_agent.config import parse_config

            parsed = parse_config(yaml.safe_dump(cfg))
            n_per_poll = per_poll({"cfg": parsed})
            for r in range(runs):
                order = ("agent", "bare") if r % 2 == 0 else ("bare", "agent")
                rates: dict[str, float] = {}
                for which in order:
                    if which == "agent":
                        (tmp / "buffer.db").unlink(missing_ok=True)
                        agent = Agent(write_config(tmp / "agent.yaml", cfg), tmp / f"agent{r}.log")
                        try:
                            _wait_for_traffic(srv)
                            time.sleep(WARMUP)
                            c0, t0 = agent.cpu_seconds(), time.monotonic()
                            rates["agent"] = _window(srv, seconds, count) / n_per_poll
                            cpu.append(100 * (agent.cpu_seconds() - c0) / (time.monotonic() - t0))
                            if not agent.alive():
                                raise RuntimeError(agent.output()[-2000:])
                        finally:
                            agent.stop()
                    else:
                        opts = bare_opts({"cfg": parsed, "info": info}, {"seconds": WARMUP + seconds + 1.5})
                        bare = LineProcess(["-m", "bench.bare", kind, json.dumps(opts)], name=f"bare {kind}")
                        try:
                            time.sleep(WARMUP)
                            rates["bare"] = _window(srv, seconds, count) / n_per_poll
                            bare.reply(seconds + 30)
                        finally:
                            bare.stop()
                agent_rates.append(rates["agent"])
                bare_rates.append(rates["bare"])
                ratios.append(rates["agent"] / rates["bare"])
                log(f"{key} run {r + 1}/{runs}: agent {rates['agent']:.0f} {unit}, bare {rates['bare']:.0f} {unit}, "
                    f"ratio {ratios[-1]:.2f}")
        finally:
            srv.stop()
            broker.stop()
    ratio = median(ratios)
    return Figure(key, name, round(ratio, 3), "x bare", f">= {target}", ratio >= target, {
        "ratio_runs": [round(x, 3) for x in ratios], "agent_rate_median": round(median(agent_rates), 1),
        "bare_rate_median": round(median(bare_rates), 1), "rate_unit": unit, "agent_cpu_pct_median":
        round(median(cpu), 1), "requests_or_values_per_poll": n_per_poll, "window_s": seconds, "runs": runs,
    }, note=f"agent {median(agent_rates):.0f} vs bare {median(bare_rates):.0f} {unit}")
