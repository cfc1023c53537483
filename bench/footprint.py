"""Agent footprint: CPU (% of one core) and RSS of the agent's own process.

1,000 Modbus tags polled every 1 s on one device (10 machines bound to run bits and
part counters; the counters step every second, every other register ramps), events
forwarded to mosquitto. The server runs in its own process. Once the agent polls, after a 5 s warm-up the
agent's CPU time (user + system, psutil) over the window gives the CPU %, and the
largest RSS sampled in it the RSS. Also checks which protocol libraries the process
imported (`bench.probe`): a Modbus-only agent must not have asyncua or snap7.
"""

from __future__ import annotations

import time

from bench.common import (
    Agent,
    Figure,
    Mosquitto,
    Settings,
    base_config,
    cpu_rss_window,
    log,
    median,
    modbus_map,
    server,
    workdir,
    write_config,
)

WARMUP = 5.0


def wait_polled(agent: Agent, servers: list, timeout: float = 90.0) -> float:
    """Until every server has seen a request from this agent; returns the seconds it took."""
    t0 = time.monotonic()
    base = [srv.ask("stats")["requests"] for srv in servers]
    while any(srv.ask("stats")["requests"] <= b for srv, b in zip(servers, base)):
        if not agent.alive() or time.monotonic() - t0 > timeout:
            raise RuntimeError(f"agent did not poll every device: {agent.output()[-2000:]}")
        time.sleep(0.1)
    return time.monotonic() - t0


def measure(s: Settings, tmp, cfg: dict, name: str, servers: list, probe: bool = False) -> tuple[list[dict], set[str]]:
    """Per run: start the agent, wait until it polls every server, warm up, then the CPU/RSS window."""
    out, modules = [], set()
    for r in range(s.runs):
        cfg["buffer"]["path"] = str(tmp / f"{name}{r}.db")
        mods = tmp / f"{name}{r}.modules"
        agent = Agent(write_config(tmp / f"{name}{r}.yaml", cfg), tmp / f"{name}{r}.log",
                      probe_modules=mods if probe else None)
        try:
            wait_polled(agent, servers)
            time.sleep(WARMUP)
            if not agent.alive():
                raise RuntimeError(agent.output()[-2000:])
            out.append(cpu_rss_window(agent, s.pick(20.0, 8.0), profile=name if s.profile and r == 0 else None))
        finally:
            agent.stop()
        if probe and mods.exists():
            modules = set(mods.read_text().split())
        errors = [line for line in agent.output().splitlines() if "device_disconnected" in line or "Traceback" in line]
        if errors:
            raise RuntimeError(f"agent trouble: {errors[:3]}")
        log(f"{name} run {r + 1}/{s.runs}: CPU {out[-1]['cpu_pct']:.2f} % of a core, RSS {out[-1]['rss_mb']:.1f} MB")
    return out, modules


def run(s: Settings) -> list[Figure]:
    with workdir("footprint") as tmp:
        broker = Mosquitto(tmp)
        srv = server("modbus", machines=10, counter="rate", hz=1, ramp=1000)
        try:
            machines, tags = modbus_map(1000, 10)
            dev = {"name": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": srv.ready["port"],
                   "poll_interval": "1s", "timeout": "2s"}
            cfg = base_config(tmp, broker.port, machines=machines, devices=[dev], tags=tags)
            import yaml

            from drivers.modbus.driver import ModbusDriver
            from edge_agent.config import parse_config

            parsed = parse_config(yaml.safe_dump(cfg))
            requests = len(ModbusDriver(parsed.devices[0], parsed.tags).plan)
            got, modules = measure(s, tmp, cfg, "modbus1k", [srv], probe=True)
        finally:
            srv.stop()
            broker.stop()
    cpu, rss = median([g["cpu_pct"] for g in got]), median([g["rss_mb"] for g in got])
    libs = {lib: any(m == lib or m.startswith(lib + ".") for m in modules) for lib in ("asyncua", "snap7", "pymodbus")}
    figures = [
        Figure("footprint:cpu", "1,000 Modbus tags at 1 s: agent CPU", round(cpu, 2), "% of a core", "<= 3 %", cpu <= 3,
               {"runs": [round(g["cpu_pct"], 2) for g in got], "requests_per_poll": requests}),
        Figure("footprint:rss", "1,000 Modbus tags at 1 s: agent RSS", round(rss, 1), "MB", "<= 50 MB", rss <= 50,
               {"runs": [round(g["rss_mb"], 1) for g in got]}),
    ]
    if modules:
        clean = not libs["asyncua"] and not libs["snap7"]
        figures.append(Figure("imports", "Modbus-only agent imports no asyncua / snap7", None, "", "neither imported",
                              clean, {"imported": libs, "modules_total": len(modules)},
                              note=", ".join(f"{k}: {'imported' if v else 'not imported'}" for k, v in libs.items())))
    return figures
