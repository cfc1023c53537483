"""OPC UA DataValue -> Sample: status code to quality, variant to the tag's declared type."""

from __future__ import annotations

import datetime as dt
from typing import Any

from asyncua import ua

from drivers.base import scaled
from drivers.opcua.address import INTEGER_RANGES, OpcUaAddress
from edge_agent.config import Tag
from edge_agent.model import Quality, Sample, rfc3339


def quality_of(status: ua.StatusCode | None) -> tuple[Quality, str | None]:
    """Good / Uncertain / Bad by the status code's severity bits; the status name for anything not good."""
    if status is None or status.is_good():
        return Quality.GOOD, None
    if status.is_uncertain():
        return Quality.UNCERTAIN, status.name
    return Quality.BAD, status.name


def convert(value: Any, data_type: str) -> Any:
    """The node's value as the tag's type; TypeError/ValueError when it does not fit."""
    if data_type == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif data_type in INTEGER_RANGES:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            lo, hi = INTEGER_RANGES[data_type]
            if not lo <= value <= hi:
                raise ValueError(f"value {value} out of range of {data_type}")
            return int(value)
    elif data_type in ("Float", "Double"):
        if isinstance(value, (int, float)):
            return float(value)
    elif data_type == "String":
        if isinstance(value, str):
            return value
        if isinstance(value, ua.LocalizedText):
            return value.Text
    elif data_type == "DateTime" and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return rfc3339(value.timestamp())
    raise TypeError(f"node value {type(value).__name__} does not fit type {data_type}")


def to_sample(tag: Tag, addr: OpcUaAddress, dv: ua.DataValue | None, ts: float) -> Sample:
    if dv is None:
        return Sample(tag.name, None, ts, Quality.BAD, "no value")
    quality, error = quality_of(dv.StatusCode)
    if quality is Quality.BAD:
        return Sample(tag.name, None, ts, quality, error)
    variant = dv.Value
    raw = variant.Value if variant is not None else None
    if raw is None:
        return Sample(tag.name, None, ts, Quality.BAD, error or "null value")
    try:
        value = convert(raw, addr.data_type)
    except (TypeError, ValueError) as e:
        sent = variant.VariantType.name if variant is not None else type(raw).__name__
        return Sample(tag.name, None, ts, Quality.BAD, f"type mismatch: node sends {sent}, tag says {addr.data_type} ({e})")
    return Sample(tag.name, scaled(tag, value), ts, quality, error)
