"""Tag values -> one canonical machine state and an operation mode. Pure.

States follow OPC UA Machinery's MachineryItemState (Executing, NotExecuting,
OutOfService, NotAvailable) plus `setup`, which MES reports keep apart from other
stops; modes follow MachineryOperationMode (processing, setup, maintenance, none).
Rules run in priority order, so a fault wins over a run bit that is still true:

1. not_available: no value for any base signal (device away, bad quality)
2. out_of_service: mode maintenance, fault bit, non-zero fault code
3. setup: mode setup or setup bit
4. the base signal: PackML state (by name), execution value, or run bit
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXECUTING, NOT_EXECUTING, SETUP, OUT_OF_SERVICE, NOT_AVAILABLE = (
    "executing", "not_executing", "setup", "out_of_service", "not_available")
STOPS = frozenset({NOT_EXECUTING, SETUP, OUT_OF_SERVICE})
STATE_SIGNALS = ("run", "fault", "fault_code", "reason_code", "mode", "setup", "packml_state", "execution")
BASE_SIGNALS = ("packml_state", "execution", "run")

# ISA-TR88.00.02 state numbers; Held is a machine-internal hold, Suspended an external one (starved, blocked).
PACKML_NAMES = ("Undefined", "Clearing", "Stopped", "Starting", "Idle", "Suspended", "Execute", "Stopping",
                "Aborting", "Aborted", "Holding", "Held", "Unholding", "Suspending", "Unsuspending",
                "Resetting", "Completing", "Complete")
PACKML_DEFAULT = {name: NOT_EXECUTING for name in PACKML_NAMES} | {
    "Execute": EXECUTING, "Aborting": OUT_OF_SERVICE, "Aborted": OUT_OF_SERVICE, "Clearing": OUT_OF_SERVICE,
    "Undefined": NOT_AVAILABLE}
EXECUTION_DEFAULT = {
    "ACTIVE": EXECUTING, "READY": NOT_EXECUTING, "INTERRUPTED": NOT_EXECUTING, "FEED_HOLD": NOT_EXECUTING,
    "STOPPED": NOT_EXECUTING, "OPTIONAL_STOP": NOT_EXECUTING, "PROGRAM_STOPPED": NOT_EXECUTING,
    "PROGRAM_OPTIONAL_STOP": NOT_EXECUTING, "PROGRAM_COMPLETED": NOT_EXECUTING, "WAIT": NOT_EXECUTING,
    "UNAVAILABLE": NOT_AVAILABLE}


def category(state: str) -> str:
    """run / stop / na: what a second in this state counts as."""
    return "run" if state == EXECUTING else "stop" if state in STOPS else "na"


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


def nonzero_code(value: Any) -> int | str | None:
    """A fault/reason code, or None when the code means 'no fault' (0, empty)."""
    if value is None or isinstance(value, bool):
        return int(value) if value else None
    if isinstance(value, (int, float)):
        return int(value) or None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text) or None
    return text or None


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    mode: str | None
    source: dict[str, Any]


class StateRules:
    def __init__(self, machine):
        sig, rules = machine.signals, machine.state
        self.tags = {name: tag for name, tag in sig if tag is not None and name in STATE_SIGNALS}
        self.base = [s for s in BASE_SIGNALS if s in self.tags]
        self.modes = {str(k).strip().lower(): v for k, v in rules.modes.items()}
        self.packml = PACKML_DEFAULT | dict(rules.packml)
        self.execution = EXECUTION_DEFAULT | {k.upper(): v for k, v in rules.execution.items()}

    @property
    def enabled(self) -> bool:
        return bool(self.base)

    def mode(self, values: dict[str, Any]) -> str | None:
        if "mode" not in values:
            return None
        return self.modes.get(str(values["mode"]).strip().lower())

    def evaluate(self, values: dict[str, Any], down: str | None) -> Verdict:
        """The state the values say, with the deciding signal's raw value as its source."""
        mode = self.mode(values)
        seen = {s: values[s] for s in self.tags if s in values}

        def verdict(state: str, signal: str, value: Any = None) -> Verdict:
            raw = values.get(signal, value)
            return Verdict(state, mode, {"signal": signal, "tag": self.tags.get(signal), "value": raw, "values": seen})

        if not any(s in values for s in self.base):
            return verdict(NOT_AVAILABLE, "connection", down or "no value")
        if mode == "maintenance":
            return verdict(OUT_OF_SERVICE, "mode")
        if "fault" in values and truthy(values["fault"]):
            return verdict(OUT_OF_SERVICE, "fault")
        if "fault_code" in values and nonzero_code(values["fault_code"]) is not None:
            return verdict(OUT_OF_SERVICE, "fault_code")
        if mode == "setup":
            return verdict(SETUP, "mode")
        if "setup" in values and truthy(values["setup"]):
            return verdict(SETUP, "setup")
        for s in self.base:
            if s in values:
                return verdict(self._base_state(s, values[s]), s)
        raise AssertionError("unreachable: a base signal has a value")

    def _base_state(self, signal: str, value: Any) -> str:
        if signal == "run":
            return EXECUTING if truthy(value) else NOT_EXECUTING
        if signal == "execution":
            return self.execution.get(str(value).strip().upper(), NOT_AVAILABLE)
        return self.packml.get(packml_name(value), NOT_AVAILABLE)


def packml_name(value: Any) -> str | None:
    """A PackML state number (or name) -> its name; None if it is neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = int(value)
        return PACKML_NAMES[n] if 0 <= n < len(PACKML_NAMES) else None
    text = str(value).strip()
    if text.isdigit():
        return packml_name(int(text))
    return next((n for n in PACKML_NAMES if n.lower() == text.lower()), None)
