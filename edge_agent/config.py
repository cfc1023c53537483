"""Config models: the one place that says what a config file may contain.

A config is one YAML file. `load_config` turns it into a typed `Config` or raises
`ConfigError` whose lines read `FILE:LINE: field.path: message`, so a technician
can go straight to the line. Secrets may be written as `${VAR}` (or `${VAR:-default}`)
and come from the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.errors import ConfigError

# ---------------------------------------------------------------- value types

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3,
                 "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def _parse_duration(value: Any) -> Any:
    """Seconds as a number, or a string such as `250ms`, `1s`, `5m`, `1h`."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 1s, 5m)")
        return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return value


def _parse_size(value: Any) -> Any:
    """Bytes as a number, or a string such as `512MB`, `2GiB`."""
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"not a size: {value!r} (use e.g. 512MB, 2GiB)")
        unit = (m.group(2) or "").lower().rstrip("b")
        return int(float(m.group(1)) * _SIZE_FACTORS[unit])
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]
ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(gt=0)]
# Names end up in MQTT topics and in the plant hierarchy: no '/', '+', '#' or spaces.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ---------------------------------------------------------------- plant and machines


class Plant(_Model):
    """Where the agent sits in the ISA-95 hierarchy; every record carries these."""

    site: Name
    area: Name
    line: Name


class Signals(_Model):
    """Which tags derivation reads for a machine (names of entries in `tags`).

    Only `run` (or `packml_state` / `execution`) is needed for machine states and only
    one counter for counts; every other signal refines what derivation can tell.
    """

    run: str | None = Field(None, description="bool tag, true while the machine runs")
    part_counter: str | None = Field(None, description="counter tag of produced parts (good + scrap)")
    good_counter: str | None = Field(None, description="counter tag of good parts")
    scrap_counter: str | None = Field(None, description="counter tag of scrap (rejected) parts")
    cycle_counter: str | None = Field(None, description="counter tag incremented once per machine cycle")
    cycle_complete: str | None = Field(None, description="bool tag; each rising edge is one machine cycle")
    fault: str | None = Field(None, description="bool tag, true while the machine is faulted (out_of_service)")
    fault_code: str | None = Field(None, description="integer tag; non-zero means faulted (out_of_service)")
    reason_code: str | None = Field(
        None, description="integer tag naming why the machine stopped (see `reasons`); defaults to fault_code")
    mode: str | None = Field(None, description="operation mode tag, mapped through `state.modes`")
    setup: str | None = Field(None, description="bool tag, true while the machine is in setup / changeover")
    packml_state: str | None = Field(None, description="PackML state number (0..17), mapped by state name")
    execution: str | None = Field(None, description="MTConnect-style execution value (ACTIVE, READY, STOPPED, ...)")


MachineState = Literal["executing", "not_executing", "setup", "out_of_service", "not_available"]
OperationMode = Literal["processing", "setup", "maintenance", "none"]
PackMLName = Literal["Undefined", "Clearing", "Stopped", "Starting", "Idle", "Suspended", "Execute", "Stopping",
                     "Aborting", "Aborted", "Holding", "Held", "Unholding", "Suspending", "Unsuspending",
                     "Resetting", "Completing", "Complete"]
Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
_CLOCK = r"^([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class StateRules(_Model):
    """How tag values become one canonical machine state (rules in edge_agent/derivation/states.py)."""

    debounce: Seconds = Field(0.0, description="a state must hold this long before it is reported; "
                              "shorter flickers count as the state before")
    micro_stop: Seconds = Field(0.0, description="stops shorter than this are micro-stops (a performance loss), "
                                "not downtime; 0 = every stop is downtime")
    restart_gap: Duration = Field(60.0, description="an agent restart longer than this is reported as "
                                  "not_available for the unobserved time; a shorter one continues the state")
    modes: dict[int | str, OperationMode] = Field(
        {}, description="value of the `mode` tag -> operation mode (processing, setup, maintenance, none); "
        "setup means state setup, maintenance means out_of_service")
    packml: dict[PackMLName, MachineState] = Field(
        {}, description="overrides of the PackML state name -> machine state table")
    execution: dict[str, MachineState] = Field(
        {}, description="overrides of the execution value -> machine state table (keys upper case)")


class Counters(_Model):
    """How raw PLC counters become part counts."""

    width: Literal[16, 32, 64] = Field(32, description="counter width in bits: it wraps at 2^width")
    max_step: Annotated[int, Field(gt=0)] | None = Field(
        None, description="largest plausible increase between two reads; a bigger jump (or a drop that is not a "
        "wrap) is a reset, never counted; default min(2^width / 4, 1000000)")


class Cycles(_Model):
    source: Literal["auto", "cycle_complete", "cycle_counter", "part_counter", "none"] = Field(
        "auto", description="what marks a machine cycle; auto = the first configured of cycle_complete, "
        "cycle_counter, part_counter")
    parts_per_cycle: Annotated[int, Field(ge=1)] = Field(
        1, description="parts per cycle when no part counter is configured")


class Aggregates(_Model):
    interval: Duration = Field(900.0, description="length of an aggregate; aligned to the wall clock (UTC epoch)")
    at_shift_change: bool = Field(True, description="also end an aggregate where a shift of the calendar "
                                  "starts or ends, so aggregates add up to shift reports")


class Break(_Model):
    start: str = Field(pattern=_CLOCK, description="local time HH:MM")
    end: str = Field(pattern=_CLOCK, description="local time HH:MM")
    name: str = ""


class Shift(_Model):
    name: str
    start: str = Field(pattern=_CLOCK, description="local time HH:MM; a shift may run past midnight")
    end: str = Field(pattern=_CLOCK, description="local time HH:MM")
    days: list[Weekday] = Field(["mon", "tue", "wed", "thu", "fri"], description="days the shift starts on")
    breaks: list[Break] = Field([], description="unplanned time inside the shift")


class Calendar(_Model):
    """Planned production time: shifts minus breaks, in the plant's time zone."""

    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Berlin")
    shifts: Annotated[list[Shift], Field(min_length=1)]

    @model_validator(mode="after")
    def _check(self) -> Calendar:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        from edge_agent.derivation.calendar import check_shift

        for s in self.shifts:
            check_shift(s)
        return self


class Machine(_Model):
    # defaults are factories, not instances made at import: an instance would build the model's
    # validator at import time, in the daemon too, where the config is only unpickled (memory.py)
    id: Name
    signals: Signals = Field(default_factory=Signals)
    state: StateRules = Field(default_factory=StateRules)
    counters: Counters = Field(default_factory=Counters)
    cycle: Cycles = Field(default_factory=Cycles)
    ideal_cycle_time: Duration | None = Field(
        None, description="seconds per part at rated speed (for performance/OEE); an order may override it")
    reasons: dict[int, str] = Field({}, description="reason code -> downtime reason name (reason catalogue)")
    aggregates: Aggregates = Field(default_factory=Aggregates)
    calendar: Calendar | None = Field(None, description="shift calendar; none = planned around the clock")


# ---------------------------------------------------------------- devices


class _Device(_Model):
    name: Name
    poll_interval: Duration = Field(1.0, description="seconds between two polls")
    timeout: Duration = Field(2.0, description="seconds one request may take")


ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


def _parity(value: Any) -> Any:
    """`N`/`E`/`O`, also written none/even/odd."""
    if isinstance(value, str):
        return {"none": "N", "even": "E", "odd": "O"}.get(value.strip().lower(), value.strip().upper())
    return value


class _ModbusDevice(_Device):
    """Fields shared by Modbus TCP and RTU; tag addresses are described in drivers/modbus/address.py."""

    byte_order: ByteOrder = Field(
        "ABCD", description="order of bytes in 32/64-bit values: ABCD = big-endian, CDAB = word-swapped, "
        "BADC = byte-swapped words, DCBA = little-endian; strings use only the byte swap (BADC, DCBA)"
    )
    addressing: Literal["zero_based", "modicon"] = Field(
        "zero_based", description="zero_based: hr:0 is the first holding register (as on the wire); "
        "modicon: 1-based numbers as in most manuals, 40001 / 400001 / hr:1 is the first holding register"
    )
    bad_tag_retry: Duration = Field(
        60.0, description="seconds before a tag whose registers answered an exception is tried again"
    )


class ModbusTcpDevice(_ModbusDevice):
    protocol: Literal["modbus_tcp"]
    host: str
    port: Port = 502
    unit: Annotated[int, Field(ge=0, le=255)] = Field(1, description="unit id of tags whose address has no @unit")


class ModbusRtuDevice(_ModbusDevice):
    """Modbus RTU on a serial line (RS-485/RS-232); several units may share it (tag address suffix @unit)."""

    protocol: Literal["modbus_rtu"]
    port: str = Field(description="serial port, e.g. /dev/ttyUSB0 (a pyserial URL such as rfc2217://host:port also works)")
    baud_rate: Annotated[int, Field(ge=300, le=4_000_000)] = Field(19200, description="bits per second, e.g. 9600, 19200")
    parity: Annotated[Literal["N", "E", "O"], BeforeValidator(_parity)] = Field(
        "E", description="N (none), E (even, the Modbus default) or O (odd)")
    stop_bits: Literal[1, 2] = Field(1, description="1, or 2 (the Modbus rule for parity none)")
    data_bits: Literal[7, 8] = Field(8, description="bits per character; RTU uses 8")
    unit: Annotated[int, Field(ge=1, le=247)] = Field(1, description="unit id of tags whose address has no @unit")


class OpcUaDevice(_Device):
    """An OPC UA server; tags address nodes by node id (`nsu=<uri>;s=…` preferred). See drivers/opcua/README.md."""

    protocol: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://[^/\s]+", description="endpoint, e.g. opc.tcp://10.0.3.12:4840")
    mode: Literal["poll", "subscribe"] = Field(
        "poll", description="poll: one Read per poll_interval; subscribe: the server reports changes (monitored items)"
    )
    sampling_interval: Duration | None = Field(
        None, description="subscribe: how often the server samples each node; defaults to poll_interval"
    )
    publishing_interval: Duration | None = Field(
        None, description="subscribe: how often the server sends queued changes; defaults to poll_interval"
    )
    queue_size: Annotated[int, Field(ge=1, le=10000)] = Field(
        10, description="subscribe: changes the server keeps per node between two publishes (so counts are not lost)"
    )
    deadband: Annotated[float, Field(ge=0)] = Field(
        0.0, description="subscribe: ignore changes of Float/Double tags smaller than this (0 = every change); "
        "integer tags (counters, codes) always report every change"
    )
    deadband_type: Literal["absolute", "percent"] = Field(
        "absolute", description="absolute value, or percent of the node's EURange"
    )
    keepalive: Duration = Field(
        5.0, description="seconds without any message from the server after which the session counts as dead"
    )
    session_timeout: Duration = Field(
        60.0, description="seconds the server keeps our session after losing contact (a reconnect reclaims it)"
    )
    max_nodes_per_read: Annotated[int, Field(ge=1)] | None = Field(
        None, description="cap on nodes per Read call; the server's own MaxNodesPerRead (ns=0;i=11705) also applies"
    )
    security_policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = Field(
        "None", description="message security policy of the endpoint to use"
    )
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] | None = Field(
        None, validate_default=True, description="None with policy None, else Sign or SignAndEncrypt (the default)"
    )
    password: SecretStr | None = Field(None, description="password; write it as ${ENV_VAR} to keep it out of the file")
    username: str | None = Field(
        None, validate_default=True, description="user name for username/password authentication"
    )
    user_certificate: Path | None = Field(None, description="X.509 user authentication: certificate (PEM or DER)")
    user_private_key: Path | None = Field(None, validate_default=True, description="X.509 user authentication: its private key (PEM)")
    certificate: Path | None = Field(
        None, description="application instance certificate; created in pki_dir on first run when empty"
    )
    private_key: Path | None = Field(None, validate_default=True, description="private key of `certificate`")
    pki_dir: Path | None = Field(
        None, description="where the agent keeps its own certificate and trusted server certificates; "
        "defaults to <buffer directory>/pki"
    )
    server_certificate: Path | None = Field(
        None, description="pin the server's certificate (DER or PEM); when empty the first one seen is trusted and kept"
    )
    trust_on_first_use: bool = Field(
        True, validate_default=True, description="without server_certificate: trust the server's certificate on first contact, then require it"
    )
    application_uri: str | None = Field(
        None, description="our application URI; from the certificate, or urn:<hostname>:edge-agent"
    )

    # Cross-field checks sit on non-secret fields (validate_default) so an error never echoes the password.
    @field_validator("security_mode", mode="after")
    @classmethod
    def _mode_fits_policy(cls, mode, info):
        policy = info.data.get("security_policy", "None")
        if policy == "None" and mode not in (None, "None"):
            raise ValueError(f"security_mode {mode} needs a security_policy other than None")
        if policy != "None" and mode == "None":
            raise ValueError(f"security_policy {policy} needs security_mode Sign or SignAndEncrypt")
        return mode

    @field_validator("username", "user_private_key", "private_key", "trust_on_first_use", mode="after")
    @classmethod
    def _pairs(cls, value, info):
        d = info.data
        if info.field_name == "username" and (value is None) != (d.get("password") is None):
            raise ValueError("username and password go together")
        if info.field_name == "user_private_key":
            if (value is None) != (d.get("user_certificate") is None):
                raise ValueError("user_certificate and user_private_key go together")
            if value is not None and d.get("username") is not None:
                raise ValueError("choose one user authentication: username/password or user_certificate")
        if info.field_name == "private_key" and (value is None) != (d.get("certificate") is None):
            raise ValueError("certificate and private_key go together")
        if info.field_name == "trust_on_first_use" and d.get("security_policy", "None") != "None":
            if d.get("server_certificate") is None and not value:
                raise ValueError("with security on, set server_certificate or trust_on_first_use: true")
        return value

    @property
    def effective_security_mode(self) -> str:
        if self.security_policy == "None":
            return "None"
        return self.security_mode or "SignAndEncrypt"


class S7Device(_Device):
    """A Siemens S7 PLC (S7-300/400/1200/1500, ISO-on-TCP). See drivers/s7/README.md."""

    protocol: Literal["s7"]
    host: str = Field(description="IP address or host name of the CPU (or its CP)")
    port: Port = Field(102, description="ISO-on-TCP port; 102 on every real PLC")
    rack: Annotated[int, Field(ge=0, le=7)] = Field(0, description="rack of the CPU (0 for S7-1200/1500)")
    slot: Annotated[int, Field(ge=0, le=31)] = Field(
        1, description="slot of the CPU: S7-300 2, S7-400 as configured, S7-1200/1500 1 (or 0)"
    )
    connection_type: Literal["PG", "OP", "S7_BASIC"] = Field(
        "PG", description="connection resource to use: PG (programming device), OP (operator panel), S7_BASIC"
    )
    local_tsap: Annotated[int, Field(ge=0, le=0xFFFF)] | None = Field(
        None, description="our TSAP, e.g. 0x0100 or \"01.00\"; default 0x0100"
    )
    remote_tsap: Annotated[int, Field(ge=0, le=0xFFFF)] | None = Field(
        None, description="the PLC's TSAP, e.g. 0x0301 or \"03.01\" (LOGO!, S7-200, CPs); replaces rack, slot and connection_type"
    )
    pdu_size: Annotated[int, Field(ge=240, le=960)] = Field(
        480, description="PDU size to ask for; the PLC may grant less (S7-1200: 240, S7-300: 240, S7-1500: 960) and reads are planned for what it grants"
    )
    max_gap: Annotated[int, Field(ge=-1, le=256)] = Field(
        32, description="merge two tags of the same area/DB into one read when at most this many unused bytes lie between them (-1: never merge)"
    )
    max_items: Annotated[int, Field(ge=1, le=20)] = Field(
        20, description="variables per multi-variable read (the protocol allows 20; some CPs and LOGO! want fewer)"
    )
    cpu_state_interval: Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)] = Field(
        10.0, description="seconds between checks of the CPU's operating mode (RUN/STOP, SZL 0x0424); 0 = never check"
    )

    @field_validator("local_tsap", "remote_tsap", mode="before")
    @classmethod
    def _tsap(cls, value: Any) -> Any:
        """A TSAP as an integer, `0x0301`, `0301` (hex) or `03.01` (hex bytes as TIA shows them)."""
        if isinstance(value, str):
            text = value.strip().lower()
            m = re.fullmatch(r"([0-9a-f]{1,2})\.([0-9a-f]{1,2})", text)
            try:
                return int(m.group(1), 16) << 8 | int(m.group(2), 16) if m else int(text.removeprefix("0x"), 16)
            except ValueError:
                raise ValueError(f"not a TSAP: {value!r} (use e.g. 0x0301 or 03.01)") from None
        return value


Device = Annotated[Union[ModbusTcpDevice, ModbusRtuDevice, OpcUaDevice, S7Device], Field(discriminator="protocol")]


# ---------------------------------------------------------------- tags


class Scale(_Model):
    """Engineering value = raw * gain + offset."""

    gain: float = 1.0
    offset: float = 0.0


class Tag(_Model):
    name: Name
    device: str
    address: str
    type: str = Field(description="data type; which names are valid depends on the protocol")
    scale: Scale | None = None
    unit: str | None = Field(None, description="engineering unit, e.g. mm, °C, parts")
    description: str = ""


# ---------------------------------------------------------------- buffer and outputs


class BufferConfig(_Model):
    """The store-and-forward buffer; trade-offs in docs/buffer.md."""

    path: Path = Field(
        Path("buffer.db"),
        description="SQLite file; a relative path is taken from $STATE_DIRECTORY (systemd) or the working directory",
    )
    max_bytes: ByteSize = Field(256 * 1024**2, description="size cap of the buffer file")
    max_age: Duration | None = Field(
        30 * 86400.0, description="events older than this are dropped (named in a gap event); null = no age cap")
    durability: Literal["full", "normal"] = Field(
        "full",
        description="full: every commit is fsynced (survives power loss); normal: faster, may lose the last commits on power loss",
    )
    memory_events: Annotated[int, Field(ge=100)] = Field(
        100_000, description="events kept in memory while the disk refuses writes (full, read-only); beyond: shed")

    def resolved_path(self) -> Path:
        if self.path.is_absolute():
            return self.path
        return Path(os.environ.get("STATE_DIRECTORY", ".")).joinpath(self.path)


class Tls(_Model):
    ca_file: Path | None = Field(None, description="CA bundle to verify the server; system CAs when empty")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    key_file: Path | None = Field(None, description="private key of cert_file (when not in the same file)")
    insecure: bool = Field(False, description="skip server verification (test benches only)")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Delivery(_Model):
    """How an output replays a backlog: in original order, marked historical, rate limited."""

    replay_rate: Annotated[float, Field(gt=0)] = Field(
        1000.0, description="events per second sent from the backlog after an outage; live events are not limited")
    historical_after: Duration = Field(
        10.0, description="an event sent this long after it was stored is marked \"historical\": true")


class MqttOutput(_Delivery):
    host: str
    port: Port | None = Field(None, description="1883, or 8883 with TLS")
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(lambda v: str(v))] = Field(
        "3.1.1", description="MQTT protocol version: 3.1.1 or 5")
    client_id: str | None = Field(None, description="defaults to edge-agent-<site>-<line>")
    username: str | None = Field(None, description="user name; write it as ${ENV_VAR} to take it from the environment")
    password: SecretStr | None = Field(None, description="password; write it as ${ENV_VAR} to keep it out of the file")
    tls: Tls | bool | None = Field(
        None, description="TLS settings; default: on with server verification (system CAs) unless the broker is "
        "on loopback; false = plain TCP")
    topic_prefix: str = Field("edge", pattern=r"^[^+#]*[^/+#]$")
    keepalive: Duration = 30.0
    timeout: Duration = Field(10.0, description="seconds to wait for a connect or a PUBACK")
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 200
    batch_size: Annotated[int, Field(ge=1)] = 500

    @property
    def effective_tls(self) -> Tls | None:
        if self.tls is None:
            return None if _is_loopback(self.host) else Tls()
        if isinstance(self.tls, bool):
            return Tls() if self.tls else None
        return self.tls

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.effective_tls else 1883)


class HttpsOutput(_Delivery):
    """POST batches of events as JSON to a REST endpoint (MES/ERP); see docs/buffer.md."""

    url: str = Field(pattern=r"^https?://[^/\s]+", description="endpoint, e.g. https://mes.plant.example/api/events")
    token: SecretStr | None = Field(None, description="bearer token; write it as ${ENV_VAR}")
    tls: Tls | None = Field(None, description="CA bundle and client certificate (mTLS); system CAs when empty")
    timeout: Duration = Field(10.0, description="seconds one POST may take")
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 200
    retry_cap: Duration = Field(60.0, description="longest wait between two retries of a failing batch")

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
            raise ValueError("use https:// (plain http is allowed only on loopback)")
        return url


class Outputs(_Model):
    mqtt: MqttOutput | None = None
    https: HttpsOutput | None = None


class MetricsConfig(_Model):
    """Prometheus metrics over HTTP (`GET /metrics`); see docs/operations.md for the names."""

    enabled: bool = Field(True, description="serve metrics; false = no listening socket at all")
    listen: str = Field("127.0.0.1:9108", pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):[0-9]{1,5}$",
                        description="host:port to listen on; loopback by default (0.0.0.0 exposes it to the network)")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class StatusConfig(_Model):
    """The local socket `edge-agent status` asks the running daemon over."""

    socket: Path | None = Field(
        None, description="unix socket path; default: next to the buffer file, <buffer>.status.sock")


# ---------------------------------------------------------------- root


class Config(_Model):
    plant: Plant
    machines: Annotated[list[Machine], Field(min_length=1)]
    devices: list[Device] = []
    tags: list[Tag] = []
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    outputs: Outputs = Field(default_factory=Outputs)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)

    def tags_of(self, device: str) -> list[Tag]:
        return [t for t in self.tags if t.device == device]

    @property
    def line_root(self) -> str:
        """`<prefix>/<site>/<area>/<line>`: the plant hierarchy as a topic; agent-wide topics live here."""
        prefix = self.outputs.mqtt.topic_prefix if self.outputs.mqtt else "edge"
        p = self.plant
        return f"{prefix}/{p.site}/{p.area}/{p.line}"

    @property
    def pki_dir(self) -> Path:
        """Certificates the agent creates (OPC UA) live beside the buffer, in the state directory."""
        return self.buffer.resolved_path().parent / "pki"

    def topic_root(self, machine: str) -> str:
        """`<line_root>/<machine>`: where a machine's events, state and commands live."""
        return f"{self.line_root}/{machine}"

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = list(cross_check(self))
        if problems:
            raise _CrossCheckFailed(problems)
        return self


class _CrossCheckFailed(ValueError):
    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


def cross_check(cfg: Config):
    """Checks that span entries: unique names, references that resolve, addresses that parse."""
    from drivers import check_address  # light: address parsers import no protocol library

    devices: dict[str, Any] = {}
    for i, d in enumerate(cfg.devices):
        if d.name in devices:
            yield ("devices", i, "name"), f"duplicate device name {d.name!r}"
        devices.setdefault(d.name, d)
    seen: set[str] = set()
    for i, t in enumerate(cfg.tags):
        if t.name in seen:
            yield ("tags", i, "name"), f"duplicate tag name {t.name!r}"
        seen.add(t.name)
        dev = devices.get(t.device)
        if dev is None:
            yield ("tags", i, "device"), f"unknown device {t.device!r}{_suggest(t.device, devices)}"
            continue
        try:
            check_address(dev, t.address, t.type)
        except ValueError as e:
            field = "type" if getattr(e, "field", None) == "type" else "address"
            yield ("tags", i, field), f"tag {t.name!r}: {e}"
    ids: set[str] = set()
    for i, m in enumerate(cfg.machines):
        if m.id in ids:
            yield ("machines", i, "id"), f"duplicate machine id {m.id!r}"
        ids.add(m.id)
        for sig, tag in m.signals:
            if tag is not None and tag not in seen:
                yield ("machines", i, "signals", sig), f"unknown tag {tag!r}{_suggest(tag, seen)}"
        yield from _check_derivation(i, m)

def _check_derivation(i: int, m: Machine):
    """A derivation option that names a signal the machine does not have would silently do nothing."""
    sig = m.signals
    needs = {"cycle_complete": sig.cycle_complete, "cycle_counter": sig.cycle_counter,
             "part_counter": sig.part_counter or sig.good_counter}
    if m.cycle.source in needs and needs[m.cycle.source] is None:
        yield ("machines", i, "cycle", "source"), f"cycle source {m.cycle.source!r} needs signals.{m.cycle.source}"
    if m.reasons and sig.reason_code is None and sig.fault_code is None:
        yield ("machines", i, "reasons"), "a reason catalogue needs signals.reason_code or signals.fault_code"
    if m.state.modes and sig.mode is None:
        yield ("machines", i, "state", "modes"), "state.modes needs signals.mode"
    if m.state.packml and sig.packml_state is None:
        yield ("machines", i, "state", "packml"), "state.packml needs signals.packml_state"
    if m.state.execution and sig.execution is None:
        yield ("machines", i, "state", "execution"), "state.execution needs signals.execution"
    if sig.scrap_counter and not (sig.part_counter or sig.good_counter):
        yield ("machines", i, "signals", "scrap_counter"), "scrap_counter needs part_counter or good_counter too"


def _suggest(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------- loading with line numbers

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Problems(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems


def _compose(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """YAML text -> (plain data, {path: line}); rejects duplicate keys and unset ${VAR}s."""
    import yaml  # here, not at the top: `edge-agent run` parses in a child process and never needs it

    # libyaml's parser when present: 6x faster on a 10k-tag file and far less heap churn
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{source}:{line}: YAML syntax error: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}:1: YAML error: {e}"]) from None
    lines: dict[tuple, int] = {}
    problems: list[str] = []

    def build(n: yaml.Node, path: tuple) -> Any:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            loader.flatten_mapping(n)
            out: dict = {}
            for k, v in n.value:
                key = loader.construct_object(k, deep=True)
                if key in out:
                    problems.append(f"{source}:{k.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key {key!r}")
                lines[path + (key,)] = k.start_mark.line + 1
                out[key] = build(v, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, path + (i,)) for i, v in enumerate(n.value)]
        value = loader.construct_object(n, deep=True)
        if isinstance(value, str) and "${" in value:
            value = _expand_env(value, source, n.start_mark.line + 1, path, problems)
        return value

    try:
        data = build(node, ()) if node is not None else None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems)
    return data, lines


def _expand_env(value: str, source: str, line: int, path: tuple, problems: list[str]) -> str:
    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problems.append(f"{source}:{line}: {_dotted(path)}: environment variable {name} is not set")
        return ""

    return _ENV.sub(repl, value)


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _locate(loc: tuple, lines: dict[tuple, int]) -> tuple[tuple, int]:
    """Follow a pydantic error location through the YAML tree; skip union/validator tags."""
    found: tuple = ()
    for part in loc:
        if found + (part,) in lines:
            found = found + (part,)
    line = lines.get(found, 1)
    if loc and loc[-1] != (found[-1] if found else None) and isinstance(loc[-1], str) and loc[-1] not in found:
        # a missing field: name it, point at its parent
        if not loc[-1].startswith(("function-", "tagged-union")):
            found = found + (loc[-1],)
    return found, line


def _message(err: dict) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "missing":
        return "required field missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown protocol {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return "required field 'protocol' missing"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("model_type", "dict_type", "list_type") and repr(err["input"]) not in msg:
        msg += f" (got {err['input']!r})"
    return msg


def parse_config(text: str, source: str = "<config>") -> Config:
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the config must be a mapping with plant, machines, devices, tags, outputs"])
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            ctx_err = err.get("ctx", {}).get("error")
            if isinstance(ctx_err, _CrossCheckFailed):
                for loc, msg in ctx_err.problems:
                    found, line = _locate(loc, lines)
                    problems.append(f"{source}:{line}: {_dotted(loc)}: {msg}")
                continue
            loc = err["loc"] + (("protocol",) if err["type"] == "union_tag_invalid" else ())
            found, line = _locate(loc, lines)
            problems.append(f"{source}:{line}: {_dotted(found)}: {_message(err)}")
        raise ConfigError(problems) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not a UTF-8 text file ({e.reason})"]) from None
    return parse_config(text, str(path))


def default_config_text() -> str:
    """The embedded default: a simulated machine on loopback, used by `make run`."""
    return (Path(__file__).with_name("default.yaml")).read_text(encoding="utf-8")
