"""`edge-agent demo` (what `make run` runs): the embedded default, end to end, on loopback.

Starts a private mosquitto and the simulated press on free ports, runs the agent
against both, and prints every event as an MQTT subscriber receives it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from pathlib import Path

import aiomqtt
import yaml

from edge_agent.config import default_config_text, parse_config
from edge_agent.daemon import Agent
from edge_agent.errors import EdgeAgentError
from edge_agent.simulator import Simulation, serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise EdgeAgentError("mosquitto not found: `make run` installs it, or run `sudo apt-get install mosquitto`")


def _describe(payload: dict) -> str:
    skip = {"schema", "type", "site", "area", "line", "machine", "ts", "event_id", "seq"}
    rest = " ".join(f"{k}={json.dumps(v)}" for k, v in payload.items() if k not in skip)
    return f"{payload.get('ts', '')}  seq={payload.get('seq', '?'):<5} {payload.get('machine', ''):<8} " \
           f"{payload.get('type', ''):<14} {rest}"


async def _print_events(port: int, topic: str) -> None:
    while True:
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier="edge-agent-demo-viewer", timeout=5) as client:
                await client.subscribe(topic, qos=1)
                async for message in client.messages:
                    try:
                        payload = json.loads(bytes(message.payload))
                    except ValueError:
                        continue
                    if "/event/" in str(message.topic):
                        print(_describe(payload), flush=True)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


async def run_demo(seconds: float | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    mqtt_port, plc_port = _free_port(), _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
    broker = await asyncio.create_subprocess_exec(_mosquitto(), "-c", str(conf),
                                                  stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL)
    data = yaml.safe_load(default_config_text())
    data["devices"][0]["port"] = plc_port
    data["outputs"]["mqtt"]["port"] = mqtt_port
    data["buffer"]["path"] = str(workdir / "buffer.db")
    cfg = parse_config(yaml.safe_dump(data), "embedded default")
    sim = Simulation(cfg)
    for machine in sim.machines.values():
        machine.cycle_time, machine.stop_probability = 0.5, 0.08
    root = cfg.line_root
    print(f"edge-agent demo: simulated press on 127.0.0.1:{plc_port} (Modbus TCP), mosquitto on "
          f"127.0.0.1:{mqtt_port}, buffer {workdir / 'buffer.db'}\nevents under {root}/# as they arrive "
          f"(Ctrl-C to stop):", flush=True)
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            sim_task = tg.create_task(serve(cfg, sim, ready=ready), name="simulator")
            await ready.wait()
            viewer = tg.create_task(_print_events(mqtt_port, f"{root}/#"), name="viewer")
            agent = tg.create_task(Agent(cfg).run(stop), name="agent")
            if seconds:
                await asyncio.sleep(seconds)
            else:
                await asyncio.Event().wait()
            stop.set()
            await agent
            viewer.cancel()
            sim_task.cancel()
    finally:
        broker.terminate()
        await broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)
