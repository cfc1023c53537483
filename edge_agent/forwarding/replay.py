"""What every output shares: the live/backlog split, the replay rate limit, the historical mark.

After an outage an output has a backlog: rows stored before its connection came up.
It replays them in original (seq) order through a token bucket (`replay_rate` events
per second), while a second lane sends rows stored after the connection came up as
soon as they are committed, so live events are never stuck behind hours of backlog.
Acks from both lanes go to `Buffer.ack_rows`; the cursor only moves over the unbroken
run of acknowledged rows, so a crash re-sends (with the same event_id and seq) rather
than skips.

An event sent more than `historical_after` seconds after it was stored carries
`"historical": true`, added to the JSON at send time: event_id, seq and every other
field are those committed. A re-sent duplicate may therefore differ from the first
copy in this one field only.
"""

from __future__ import annotations

import asyncio
import time

from buffer import Row

HISTORICAL = b',"historical":true}'


def is_historical(row: Row, historical_after: float, now: float) -> bool:
    return now - row.stored > historical_after


def mark_historical(payload: bytes) -> bytes:
    """`{...}` -> `{...,"historical":true}` without re-encoding the committed JSON."""
    body = payload.rstrip()
    if not body.endswith(b"}"):
        raise ValueError("payload is not a JSON object")
    return body[:-1] + HISTORICAL


class TokenBucket:
    """`rate` tokens per second, at most one second's worth saved up."""

    def __init__(self, rate: float, *, clock=time.monotonic):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        t = self._clock()
        self._tokens = min(self.capacity, self._tokens + (t - self._last) * self.rate)
        self._last = t

    @property
    def burst(self) -> int:
        return int(self.capacity)

    async def take(self, n: int) -> None:
        n = min(n, self.burst)
        while True:
            self._refill()
            if self._tokens >= n:
                self._tokens -= n
                return
            await asyncio.sleep((n - self._tokens) / self.rate)
