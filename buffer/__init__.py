"""SQLite store-and-forward buffer: events are committed here before any send."""

from buffer.store import (
                          AGGREGATE,
                          DETAIL,
                          FACT,
                          NEVER,
                          SAMPLE,
                          AsyncBuffer,
                          Buffer,
                          BufferMetrics,
                          NewEvent,
                          Row,
                          priority_of,
                          storage_problem,
)

__all__ = ["AGGREGATE", "DETAIL", "FACT", "NEVER", "SAMPLE", "AsyncBuffer", "Buffer", "BufferMetrics", "NewEvent",
           "Row", "priority_of", "storage_problem"]
