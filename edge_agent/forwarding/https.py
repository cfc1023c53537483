"""HTTPS output: batched POST of JSON events to a REST endpoint (httpx).

Each POST carries a JSON array of events (each exactly as committed, plus
`"historical": true` when replayed late) and an `Idempotency-Key` derived from the
agent's line and the batch's seq range, so a retry of the same batch carries the
same key. Authentication: a bearer token (`token: ${ENV_VAR}`) and/or a client
certificate (mTLS); the server is verified against the system CAs or `tls.ca_file`.

Answers:
- 2xx: the batch is acknowledged (its rows may leave the buffer).
- timeouts, connection errors, 5xx, 408, 425, 429, and 401/403/404 (credentials or
  URL wrong: a config problem, not a bad batch): the same batch is retried with
  capped backoff (honouring Retry-After), forever; nothing is skipped.
- any other 4xx: the batch is bad. It is split in halves until the bad event is
  alone; that one goes to the dead-letter table (`edge-agent buffer stats`) and the
  queue moves on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl

import httpx

from buffer import AsyncBuffer, Row
from edge_agent import __version__
from edge_agent.config import HttpsOutput
from edge_agent.forwarding.mqtt import describe_error, tls_context
from edge_agent.forwarding.replay import TokenBucket, is_historical, mark_historical
from edge_agent.model import now
from edge_agent.sampling import Backoff

log = logging.getLogger("edge_agent.forwarding.https")

RETRY_STATUS = frozenset({401, 403, 404, 407, 408, 425, 429})


def idempotency_key(line: str, rows: list[Row]) -> str:
    """Same line and seq range -> same key; readable prefix, hashed rest (header-safe)."""
    digest = hashlib.sha256(f"{line}:{rows[0].seq}-{rows[-1].seq}:{len(rows)}".encode()).hexdigest()[:24]
    return f"ea-{rows[0].seq}-{rows[-1].seq}-{digest}"


class _Resplit(Exception):
    """The live lane is behind: start over with a new backlog/live split."""


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.after = after


class HttpsForwarder:
    name = "https"

    def __init__(self, cfg: HttpsOutput, buffer: AsyncBuffer, *, line: str):
        self.cfg, self.buffer, self.line = cfg, buffer, line
        self.wake = asyncio.Event()
        self.connected = False
        self.delivered = 0
        self.historical_sent = 0
        self.posts = 0
        self.retries = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.last_delivery: float | None = None
        self._bucket = TokenBucket(cfg.replay_rate)
        self._last_body = ""
        # first seq -> the batch last attempted from there: once posted, a batch is retried exactly as it
        # was (same rows, same Idempotency-Key), even when a backlog/live re-split cancels its lane mid-retry
        self._attempted: dict[int, list[Row]] = {}

    async def run(self) -> None:
        cfg = self.cfg
        ctx = await asyncio.to_thread(self._ssl_context)  # reading certificates may block
        headers = {"Content-Type": "application/json", "User-Agent": f"edge-agent/{__version__}"}
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        async with httpx.AsyncClient(verify=ctx, timeout=cfg.timeout, headers=headers,
                                     limits=httpx.Limits(max_connections=4)) as client:
            while True:
                live_from = self.buffer.last_seq + 1  # stored from now on: live; before: backlog
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._lane(client, after=0, before=live_from), name="https-backlog")
                        tg.create_task(self._lane(client, after=live_from - 1, before=None), name="https-live")
                except* _Resplit:
                    log.info("event=https_backlog rows_from_seq=%d (replayed at up to %.0f events/s)",
                             live_from, self.cfg.replay_rate)

    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(self.cfg.tls, purpose="https") or ssl.create_default_context()

    async def _lane(self, client: httpx.AsyncClient, *, after: int, before: int | None) -> None:
        backlog = before is not None
        limit = min(self.cfg.batch_size, self._bucket.burst) if backlog else self.cfg.batch_size
        sent = after
        while True:
            if not backlog:
                self.wake.clear()
            rows = await self.buffer.read(self.name, limit, after=sent, before=before)
            if not rows:
                if backlog:
                    return
                try:
                    async with asyncio.timeout(1.0):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                continue
            rows = self._attempted.get(rows[0].seq, rows)
            if backlog:
                await self._bucket.take(len(rows))
            elif is_historical(rows[0], self.cfg.historical_after, now()):
                raise _Resplit()  # the live lane fell behind (an outage): what it has is backlog now
            await self._deliver(client, rows)
            sent = rows[-1].seq

    async def _deliver(self, client: httpx.AsyncClient, rows: list[Row]) -> None:
        """Deliver one batch: retried until the server takes it or rejects it for good."""
        backoff = Backoff(base=0.5, cap=self.cfg.retry_cap)
        self._attempted[rows[0].seq] = rows
        while True:
            try:
                status = await self._post(client, rows)
            except _Retry as e:
                self.retries += 1
                self.connected = False
                delay = backoff.next() if e.after is None else min(e.after, self.cfg.retry_cap)
                if str(e) != self.last_error:
                    log.warning("event=https_retry url=%s from_seq=%d to_seq=%d error=%r retry_in=%.1fs",
                                self.cfg.url, rows[0].seq, rows[-1].seq, str(e), delay)
                self.last_error = str(e)
                await asyncio.sleep(delay)
                continue
            if status < 300:
                await self.buffer.ack_rows(self.name, [r.seq for r in rows])
                self._attempted.pop(rows[0].seq, None)
                self.delivered += len(rows)
                self.last_delivery = now()
                return
            if len(rows) > 1:  # a bad batch: find the bad event(s), deliver the rest
                half = len(rows) // 2
                await self._deliver(client, rows[:half])
                await self._deliver(client, rows[half:])
                return
            await self.buffer.dead_letter(self.name, rows, status, self._last_body)
            self._attempted.pop(rows[0].seq, None)
            self.dead_lettered += len(rows)
            return

    async def _post(self, client: httpx.AsyncClient, rows: list[Row]) -> int:
        t = now()
        parts = []
        for r in rows:
            if is_historical(r, self.cfg.historical_after, t):
                parts.append(mark_historical(r.payload))
                self.historical_sent += 1
            else:
                parts.append(r.payload)
        body = b"[" + b",".join(parts) + b"]"
        self.posts += 1
        try:
            # httpx's timeout covers each phase; the outer one bounds the whole exchange
            async with asyncio.timeout(self.cfg.timeout * 2):
                resp = await client.post(self.cfg.url, content=body,
                                         headers={"Idempotency-Key": idempotency_key(self.line, rows)})
        except (httpx.TransportError, TimeoutError, ssl.SSLError, OSError) as e:
            raise _Retry(describe_error(e.__context__ if isinstance(e, httpx.ConnectError) and e.__context__
                                        else e) or type(e).__name__) from None
        self._last_body = f"HTTP {resp.status_code}: {resp.text[:500]}"
        if resp.status_code >= 500 or resp.status_code in RETRY_STATUS:
            after = resp.headers.get("Retry-After")
            raise _Retry(self._last_body, float(after) if after and after.isdigit() else None)
        self.connected = True
        if resp.status_code < 300:
            self.last_error = None
        return resp.status_code

