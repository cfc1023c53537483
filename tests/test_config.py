"""Config validation: every bad file in tests/data/bad_configs names file, line and field.

Each bad file's first line says what `edge-agent validate` must print for it:
`# expect: :LINE: field.path: message start`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import load_config, parse_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((Path(__file__).parent / "data" / "bad_configs").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_there_are_at_least_ten_distinct_bad_files():
    assert len(BAD) >= 10
    assert len({expected(p).split(": ", 2)[-1] for p in BAD}) == len(BAD)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_message_names_file_line_and_field(path: Path, monkeypatch):
    monkeypatch.delenv("EDGE_AGENT_TEST_UNSET_PASSWORD", raising=False)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    want = f"{path}{expected(path)}"
    lines = result.output.splitlines()
    assert any(line.startswith(want) for line in lines), f"wanted a line starting {want!r}, got:\n{result.output}"
    assert "Traceback" not in result.output


def test_bad_config_from_a_real_process_has_no_traceback():
    path = next(p for p in BAD if p.stem == "unknown_key")
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "validate", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert f"{path}:9: devices[0].hots: unknown key 'hots'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("name", ["example.yaml", "default.yaml"])
def test_shipped_configs_are_valid(name, monkeypatch):
    monkeypatch.setenv("MQTT_PASSWORD", "secret")
    result = CliRunner().invoke(app, ["validate", str(ROOT / "config" / name)])
    assert result.exit_code == 0, result.output
    assert ": ok (" in result.output


def test_env_substitution_and_default(monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_TEST_PW", "s3cret")
    text = (ROOT / "config" / "default.yaml").read_text().replace(
        "topic_prefix: edge", "topic_prefix: edge\n    username: ${EDGE_AGENT_TEST_USER:-line1}\n    password: ${EDGE_AGENT_TEST_PW}")
    cfg = parse_config(text)
    assert cfg.outputs.mqtt.username == "line1"
    assert cfg.outputs.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)  # secrets never show up in logs or reprs


def test_durations_and_sizes():
    text = (ROOT / "config" / "default.yaml").read_text()
    cfg = parse_config(text.replace("poll_interval: 250ms", "poll_interval: 2m").replace("max_bytes: 64MB", "max_bytes: 1GiB"))
    assert cfg.devices[0].poll_interval == 120.0
    assert cfg.buffer.max_bytes == 1024**3


def test_several_problems_are_all_reported():
    text = (ROOT / "config" / "default.yaml").read_text().replace("site: demo-site", "site: demo/site").replace(
        "id: press01", "id: press01\n    colour: red")
    with pytest.raises(ConfigError) as e:
        parse_config(text, "multi.yaml")
    joined = "\n".join(e.value.problems)
    assert "plant.site" in joined and "machines[0].colour: unknown key 'colour'" in joined


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml: cannot read config" in str(e.value)
