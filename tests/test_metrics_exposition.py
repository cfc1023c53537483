"""edge_agent/metrics.py writes the Prometheus text format itself (importing prometheus_client
cost the daemon ≈ 1.4 MB). Its output must stay what prometheus_client writes for the same
metrics: built here with both and compared line by line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import prometheus_client as pc
from prometheus_client.core import CounterMetricFamily as PcCounterFamily
from prometheus_client.core import GaugeMetricFamily as PcGaugeFamily
from prometheus_client.parser import text_string_to_metric_families

from edge_agent import metrics as ours

ROOT = Path(__file__).resolve().parent.parent
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ODD = 'we"ird\\dev\nice'


def _families(mod_counter, mod_gauge):
    class Live:
        def collect(self):
            g = mod_gauge("edge_agent_info", "Agent version", labels=["version"])
            g.add_metric(["0.1.0"], 1)
            yield g
            c = mod_counter("edge_agent_device_reads", "Successful polls\nof a device \\ all", labels=["device"])
            c.add_metric(["plc"], 12)
            c.add_metric([ODD], 3)
            yield c
            big = mod_gauge("edge_agent_buffer_bytes", "Bytes")
            big.add_metric([], 123456789012)
            yield big
            empty = mod_gauge("edge_agent_machine_state", "1 for the current state", labels=["machine", "state"])
            yield empty
            nan = mod_gauge("edge_agent_x", "odd values", labels=["k"])
            for k, v in (("nan", float("nan")), ("inf", float("inf")), ("neg", -2.5), ("small", 1e-7)):
                nan.add_metric([k], v)
            yield nan

    return Live()


def _drive(hist, samples, events) -> None:
    for v in (0.001, 0.005, 0.02, 0.3, 7, 50):
        hist.labels("plc").observe(v)
    hist.labels(ODD).observe(0.01)
    samples.labels("plc").inc(10)
    samples.labels(ODD).inc(3)
    events.labels("count").inc()
    events.labels("count").inc(2)


def _no_created(text: str) -> str:
    return re.sub(r"^(\w+_created(?:\{[^}]*\})?) \S+$", r"\1 T", text, flags=re.MULTILINE)


def test_exposition_is_what_prometheus_client_writes():
    reg = pc.CollectorRegistry(auto_describe=False)
    h = pc.Histogram("edge_agent_poll_duration_seconds", "Time one poll took", ["device"], buckets=BUCKETS, registry=reg)
    s = pc.Counter("edge_agent_samples", "Samples read from devices", ["device"], registry=reg)
    e = pc.Counter("edge_agent_events", "Events committed", ["type"], registry=reg)
    idle = pc.Counter("edge_agent_idle", "never incremented", ["type"], registry=reg)
    reg.register(_families(PcCounterFamily, PcGaugeFamily))
    _drive(h, s, e)
    expected = pc.generate_latest(reg).decode()

    h2 = ours.Histogram("edge_agent_poll_duration_seconds", "Time one poll took", ["device"], buckets=BUCKETS)
    s2 = ours.Counter("edge_agent_samples", "Samples read from devices", ["device"])
    e2 = ours.Counter("edge_agent_events", "Events committed", ["type"])
    idle2 = ours.Counter("edge_agent_idle", "never incremented", ["type"])
    _drive(h2, s2, e2)
    got = ours.generate_latest([h2, s2, e2, idle2, _families(ours.CounterMetricFamily, ours.GaugeMetricFamily)]).decode()

    assert idle is not None and idle2 is not None
    assert _no_created(got) == _no_created(expected)
    assert ours.CONTENT_TYPE_LATEST == pc.CONTENT_TYPE_LATEST
    parsed = {f.name: f for f in text_string_to_metric_families(got)}
    assert parsed["edge_agent_samples"].samples[0].value == 10


def test_the_daemon_side_of_metrics_does_not_import_prometheus_client():
    code = "import sys, edge_agent.metrics, edge_agent.service; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
