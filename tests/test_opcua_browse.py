"""Browsing the simulator's OPC UA server: the machine's variables with correct types,
node ids with namespace URIs that a tag can use as-is, and the `edge-agent browse` CLI."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
import pytest_asyncio
import yaml
from conftest import ROOT, FrozenClock
from opcua_fixtures import NS_PRESS, free_port

from drivers.opcua.browse import browse, render_text
from edge_agent.config import parse_config
from edge_agent.errors import DriverError
from edge_agent.simulator import Simulation
from edge_agent.simulator.opcua import SIM_NAMESPACE, OpcUaFrontend

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIGNAL_TYPES = {"run": "Boolean", "part_counter": "UInt32", "good_counter": "UInt32", "scrap_counter": "UInt32",
                "cycle_counter": "UInt32", "fault": "Boolean", "fault_code": "UInt16", "cycle_time": "Double",
                "reason_code": "UInt16", "cycle_complete": "Boolean", "mode": "UInt16", "setup": "Boolean",
                "packml_state": "UInt16", "execution": "String"}


def config(port: int, tmp) -> dict:
    return {
        "plant": {"site": "s1", "area": "a1", "line": "l1"},
        "machines": [{"id": "m1", "signals": {"run": "running", "part_counter": "parts"}}],
        "devices": [{"name": "ua", "protocol": "opcua", "url": f"opc.tcp://127.0.0.1:{port}/sim", "timeout": "2s"}],
        "tags": [
            {"name": "running", "device": "ua", "address": f"nsu={NS_PRESS};s=Line3.Press.Running", "type": "Boolean"},
            {"name": "parts", "device": "ua", "address": f"nsu={NS_PRESS};s=Line3.Press.Counter", "type": "UInt32"},
            {"name": "temp", "device": "ua", "address": "ns=2;i=5001", "type": "Double"},
        ],
        "buffer": {"path": str(tmp / "buffer.db")},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browse")
    raw = config(free_port(), tmp)
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = parse_config(yaml.safe_dump(raw))
    clock = FrozenClock()
    sim = Simulation(cfg, clock=clock)
    sim.machines["m1"].cycle_time = 0.01
    frontend = OpcUaFrontend(cfg.devices[0], cfg.tags, sim)
    await frontend.start()
    clock.run()
    await asyncio.sleep(0.3)
    clock.freeze()
    await asyncio.sleep(0.12)  # two refreshes of the server's values after the freeze
    yield cfg, path, sim.machines["m1"]
    await frontend.stop()


async def test_browse_lists_the_machine_variables_with_types_and_values(served):
    cfg, _, machine = served
    entries = await browse(cfg.devices[0], depth=3)
    by_path = {e["path"]: e for e in entries}
    assert all(not e["node_id"].startswith("i=") for e in entries), "standard nodes (Server object) are skipped"
    for signal, dtype in SIGNAL_TYPES.items():
        e = by_path[f"Objects/Machines/m1/{signal}"]
        assert (e["node_class"], e["data_type"]) == ("Variable", dtype), e
        assert e["node_id"] == f"nsu={SIM_NAMESPACE};s=m1.{signal}"
    assert machine.total > 0
    assert by_path["Objects/Machines/m1/part_counter"]["value"] == machine.total
    assert by_path["Objects/Machines/m1/run"]["value"] is machine.running
    assert by_path["Objects/Machines"]["node_class"] == "Object"
    # the config's tags are served at their node ids, and browse prints ids a tag can use as its address
    counter = by_path["Objects/ua/Counter"]
    assert (counter["node_id"], counter["data_type"], counter["value"]) == (
        f"nsu={NS_PRESS};s=Line3.Press.Counter", "UInt32", machine.total)
    assert by_path["Objects/ua/temp"]["data_type"] == "Double"
    text = render_text(entries)
    assert text.splitlines()[0].split() == ["PATH", "NODE", "ID", "TYPE", "VALUE"]
    assert f"nsu={SIM_NAMESPACE};s=m1.part_counter" in text


async def test_browse_from_a_path_and_depth(served):
    cfg, _, _ = served
    entries = await browse(cfg.devices[0], path="Machines/m1", depth=1)
    assert sorted(e["browse_name"] for e in entries) == sorted(SIGNAL_TYPES)
    shallow = await browse(cfg.devices[0], depth=1)
    assert {e["path"] for e in shallow} == {"Objects/Machines", "Objects/ua"}
    by_id = await browse(cfg.devices[0], path=f"nsu={SIM_NAMESPACE};s=Machines.m1", depth=1)
    assert len(by_id) == len(SIGNAL_TYPES)
    with pytest.raises(DriverError, match="no 'Nope' under Objects/Machines"):
        await browse(cfg.devices[0], path="Machines/Nope")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edge_agent", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_browse_json_and_errors(served):
    _, path, machine = served
    code, out, err = await run_cli("browse", "ua", "--config", str(path), "--path", "Machines", "--depth", "2", "--json")
    assert code == 0, err
    entries = json.loads(out)
    types = {e["browse_name"]: e["data_type"] for e in entries if e["node_class"] == "Variable"}
    assert types == SIGNAL_TYPES
    assert next(e for e in entries if e["browse_name"] == "part_counter")["value"] == machine.total
    code, out, err = await run_cli("browse", "ua", "--config", str(path), "--path", "Machines/m1", "--depth", "1")
    assert code == 0 and "part_counter" in out and "UInt32" in out
    code, out, err = await run_cli("browse", "nope", "--config", str(path))
    assert code == 2 and "no OPC UA device 'nope'" in err and "ua" in err
    code, out, err = await run_cli("browse", "ua", "--config", str(path), "--path", "Nowhere")
    assert code == 1 and "no 'Nowhere' under Objects" in err and "Traceback" not in err
