"""SQLite store-and-forward buffer: events are committed here before any send."""

from buffer.store import AsyncBuffer, Buffer, NewEvent, Row

__all__ = ["AsyncBuffer", "Buffer", "NewEvent", "Row"]
