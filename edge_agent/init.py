"""`edge-agent init`: a commented starter config, from flags or prompts.

The text is checked with `parse_config` before it is written, so what `init` writes always
passes `edge-agent validate` (the tests do exactly that for every protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("modbus_tcp", "opcua", "s7")


@dataclass
class Answers:
    site: str = "my-site"
    area: str = "my-area"
    line: str = "line1"
    machine: str = "machine01"
    protocol: str = "modbus_tcp"
    plc_host: str = "192.0.2.10"
    plc_port: int | None = None
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    broker_username: str | None = None
    topic_prefix: str = "edge"


# what each protocol needs: device lines, and the two starter tags (running, parts)
def _device(a: Answers) -> tuple[str, str]:
    if a.protocol == "modbus_tcp":
        device = f"""    protocol: modbus_tcp
    host: {a.plc_host}       # the PLC's address on the machine network
    port: {a.plc_port or 502}
    unit: 1                 # Modbus unit id (slave id)
    addressing: zero_based  # zero_based: hr:0 is the first holding register; modicon: 40001
    byte_order: ABCD        # 32-bit values: ABCD (big-endian), CDAB (word-swapped), BADC, DCBA"""
        tags = """  - name: running
    device: plc
    address: "coil:0"       # coil / di / hr / ir; find registers with `edge-agent scan`
    type: bool
  - name: parts
    device: plc
    address: "hr:0"
    type: uint32
    unit: parts"""
    elif a.protocol == "opcua":
        device = f"""    protocol: opcua
    url: opc.tcp://{a.plc_host}:{a.plc_port or 4840}
    mode: poll              # poll, or subscribe (the server reports changes)
    security_policy: "None" # Basic256Sha256 with security_mode SignAndEncrypt on a real line
    # username: agent
    # password: ${{OPCUA_PASSWORD}}   # secrets come from the environment, never from this file"""
        tags = """  - name: running
    device: plc
    address: "ns=2;s=Machine.Running"   # node id; find nodes with `edge-agent browse`
    type: Boolean
  - name: parts
    device: plc
    address: "ns=2;s=Machine.PartCounter"
    type: UInt32
    unit: parts"""
    else:
        device = f"""    protocol: s7
    host: {a.plc_host}
    port: {a.plc_port or 102}
    rack: 0                 # S7-1200/1500: rack 0, slot 1; S7-300: slot 2
    slot: 1"""
        tags = """  - name: running
    device: plc
    address: "DB1.DBX0.0"   # TIA notation; the DB must not be "optimized" (PUT/GET allowed)
    type: BOOL
  - name: parts
    device: plc
    address: "DB1.DBD2"
    type: UDINT
    unit: parts"""
    return device, tags


def starter_config(a: Answers) -> str:
    device, tags = _device(a)
    auth = ""
    if a.broker_username:
        auth = f"""    username: {a.broker_username}
    password: ${{MQTT_PASSWORD}}   # from the environment (systemd: /etc/edge-agent/secrets.env)
"""
    return f"""# edge-agent config, written by `edge-agent init`. Check it with: edge-agent validate <this file>
# Durations: 500ms, 1s, 5m (or plain seconds). Sizes: 512MB, 2GiB.
# Secrets: ${{ENV_VAR}} is replaced from the environment.
# Add tags with: edge-agent tags add NAME --device plc --address ... --type ...

plant:                      # the ISA-95 hierarchy; every record carries it and topics follow it
  site: {a.site}
  area: {a.area}
  line: {a.line}

machines:
  - id: {a.machine}
    signals:                # the tags derivation reads (names from the tags list below)
      run: running
      part_counter: parts

devices:
  - name: plc
{device}
    poll_interval: 1s
    timeout: 1s

tags:
{tags}

buffer:
  path: buffer.db           # relative: in $STATE_DIRECTORY (/var/lib/edge-agent under systemd)
  max_bytes: 256MB
  durability: full          # full: fsync per commit (survives power loss); normal: faster on SD cards

outputs:
  mqtt:
    host: {a.broker_host}
    port: {a.broker_port}
{auth}    topic_prefix: {a.topic_prefix}    # topics: {a.topic_prefix}/{a.site}/{a.area}/{a.line}/{a.machine}/event/<type>

metrics:
  listen: 127.0.0.1:9108    # Prometheus /metrics; loopback only. enabled: false turns it off
"""
