"""OPC UA addresses and config: pure parsing, line-numbered config errors, no asyncua at validation time."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from drivers.opcua.address import TypeMismatch, parse, parse_node_id
from edge_agent.config import parse_config
from edge_agent.errors import ConfigError


@pytest.mark.parametrize("text, kind, ident, ns, nsu", [
    ("nsu=urn:acme:press;s=Line3.Press.Counter", "s", "Line3.Press.Counter", None, "urn:acme:press"),
    ("nsu=http://acme.com/UA/Press/;i=6001", "i", 6001, None, "http://acme.com/UA/Press/"),
    ("ns=2;s=Line3.Press.Counter", "s", "Line3.Press.Counter", 2, None),
    ("ns=2;s=with;semicolon", "s", "with;semicolon", 2, None),
    ("i=2258", "i", 2258, 0, None),
    ("ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", "g", uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), 3, None),
    ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", "b", bytes.fromhex("33f45b281b1156478f09e3dcc76e2844"), 1, None),
])
def test_node_ids(text, kind, ident, ns, nsu):
    node = parse_node_id(text)
    assert (node.kind, node.identifier, node.namespace_index, node.namespace_uri) == (kind, ident, ns, nsu)


@pytest.mark.parametrize("text, message", [
    ("Line3.Press.Counter", "expected [ns=<index>;|nsu=<uri>;]<i|s|g|b>=<id>"),
    ("ns=2;x=5", "expected [ns=<index>;|nsu=<uri>;]"),
    ("ns=2;i=abc", "i= needs a number"),
    ("i=4294967296", "i= needs a number"),
    ("ns=70000;i=1", "namespace index 70000 is above 65535"),
    ("ns=1;g=not-a-guid", "g= needs a GUID"),
    ("ns=1;b=***", "b= needs base64"),
])
def test_bad_node_ids(text, message):
    with pytest.raises(ValueError) as exc:
        parse_node_id(text)
    assert message in str(exc.value) and not isinstance(exc.value, TypeMismatch)


def test_types_are_checked_case_insensitively():
    assert parse("i=1", "uint32").data_type == "UInt32"
    with pytest.raises(TypeMismatch) as exc:
        parse("i=1", "Int8")
    assert exc.value.field == "type" and "UInt32" in str(exc.value)


CONFIG = """\
plant: {site: s, area: a, line: l}
machines: [{id: m1, signals: {part_counter: parts}}]
devices:
  - name: ua
    protocol: opcua
    url: opc.tcp://127.0.0.1:4840
    mode: subscribe
tags:
  - {name: parts, device: ua, address: "nsu=urn:acme;s=Counter", type: UInt32}
  - {name: bad_addr, device: ua, address: "Counter", type: UInt32}
  - {name: bad_type, device: ua, address: "ns=2;s=Counter", type: float32}
"""


def test_config_errors_name_line_and_field():
    with pytest.raises(ConfigError) as exc:
        parse_config(CONFIG, "agent.yaml")
    assert exc.value.problems == [
        ("agent.yaml:10: tags[1].address: tag 'bad_addr': bad OPC UA node id 'Counter': "
         "expected [ns=<index>;|nsu=<uri>;]<i|s|g|b>=<id>, "
         "e.g. nsu=urn:acme:press;s=Line3.Press.Counter or ns=2;s=Counter or i=2258"),
        ("agent.yaml:11: tags[2].type: tag 'bad_type': type 'float32' is not an OPC UA type the driver reads "
         "(one of Boolean, Int16, UInt16, Int32, UInt32, Int64, UInt64, Float, Double, String, DateTime)"),
    ]


@pytest.mark.parametrize("extra, message", [
    ("security_mode: Sign", "devices[0].security_mode: security_mode Sign needs a security_policy other than None"),
    ("username: bob", "devices[0].username: username and password go together"),
    ("password: hunter2", "devices[0].username: username and password go together"),
    ("url: http://127.0.0.1", "devices[0].url: String should match pattern"),
])
def test_device_errors_never_echo_the_password(extra, message):
    text = CONFIG.replace("    mode: subscribe\n", f"    mode: subscribe\n    {extra}\n").replace(
        "    url: opc.tcp://127.0.0.1:4840\n", "" if extra.startswith("url") else "    url: opc.tcp://127.0.0.1:4840\n")
    text = "\n".join(line for line in text.splitlines() if "bad_" not in line) + "\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "agent.yaml")
    assert any(message in p for p in exc.value.problems), exc.value.problems
    assert "hunter2" not in str(exc.value)


def test_password_comes_from_the_environment_as_a_secret(monkeypatch):
    monkeypatch.setenv("OPCUA_PASSWORD", "from-env")
    cfg = parse_config("""
plant: {site: s, area: a, line: l}
machines: [{id: m1}]
devices:
  - {name: ua, protocol: opcua, url: "opc.tcp://127.0.0.1:4840", security_policy: Basic256Sha256,
     username: operator, password: "${OPCUA_PASSWORD}"}
""")
    dev = cfg.devices[0]
    assert dev.password.get_secret_value() == "from-env"
    assert "from-env" not in repr(dev) and dev.effective_security_mode == "SignAndEncrypt"


def test_validating_an_opcua_config_does_not_import_asyncua():
    good = "\n".join(line for line in CONFIG.splitlines() if "bad_" not in line)
    code = ("import sys; from edge_agent.config import parse_config\n"
            f"cfg = parse_config({good!r})\n"
            "assert cfg.devices[0].protocol == 'opcua' and len(cfg.tags) == 1\n"
            "assert 'asyncua' not in sys.modules, 'asyncua imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_config_validates_and_readme_documents_every_option(monkeypatch):
    from pathlib import Path

    from edge_agent.config import OpcUaDevice, load_config

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("OPCUA_PASSWORD", "example")
    cfg = load_config(root / "config" / "opcua-example.yaml")
    assert {d.mode for d in cfg.devices} == {"poll", "subscribe"}
    readme = (root / "drivers" / "opcua" / "README.md").read_text()
    for name, field in OpcUaDevice.model_fields.items():
        if name in ("name", "protocol"):
            continue
        assert f"`{name}`" in readme, f"drivers/opcua/README.md does not document {name}"
        assert field.description, f"OpcUaDevice.{name} has no description"
