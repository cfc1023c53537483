"""Order context (BDE): which production order, article and operation the machine works on. Pure.

Set by the MES (MQTT command) or the CLI; every event carries it, so confirmations
and costs can be booked per order without joining on time.
"""

from __future__ import annotations

from typing import Any

_TEXT = ("order", "article", "operation")


def parse_set_order(cmd: dict[str, Any]) -> dict[str, Any] | None:
    """The order context a set_order command asks for; None = no order. ValueError if malformed."""
    order = cmd.get("order")
    if order is None or order == "":
        return None
    ctx: dict[str, Any] = {}
    for key in _TEXT:
        value = cmd.get(key)
        if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"set_order: {key} must be a string (got {value!r})")
        ctx[key] = None if value is None else str(value)
    for key in ("ideal_cycle_time", "target_quantity"):
        value = cmd.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"set_order: {key} must be a positive number (got {value!r})")
        ctx[key] = value
    unknown = set(cmd) - {"command", *_TEXT, "ideal_cycle_time", "target_quantity"}
    if unknown:
        raise ValueError(f"set_order: unknown field(s) {sorted(unknown)}")
    return ctx


def on_event(ctx: dict[str, Any] | None) -> dict[str, Any] | None:
    """The order as every event carries it."""
    if ctx is None:
        return None
    return {"id": ctx["order"], "article": ctx["article"], "operation": ctx["operation"]}


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    strip = lambda c: None if c is None else {k: v for k, v in c.items() if k != "since"}  # noqa: E731
    return strip(a) == strip(b)
