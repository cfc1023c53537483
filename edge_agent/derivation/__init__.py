"""Derivation: samples in, machine facts out. Pure: no I/O, no clock, no randomness.

One `Deriver` per machine. `step()` takes the samples of a poll cycle (and device
status changes), `tick(now)` lets wall-clock time pass (debounce expiry, micro-stop
threshold, interval aggregates), `command()` applies an MES/CLI command. Each returns
the events it implies. `snapshot()` is the state to persist with those events (in the
same buffer transaction); passing it back to the constructor after a restart
continues exactly where the agent stopped. The small modules beside this one each
own one concern; this class only sequences them on one timeline.

Time only moves forward: an item older than what was already seen counts at the
latest time seen. Seconds are booked once classified for good (see aggregates.py).
The event contract is docs/events.md; schemas/ holds one JSON Schema per type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from edge_agent.config import Machine
from edge_agent.derivation import orders
from edge_agent.derivation.aggregates import Ledger, add_acc, new_acc
from edge_agent.derivation.calendar import ShiftCalendar
from edge_agent.derivation.counters import COUNTER_SIGNALS, Counters
from edge_agent.derivation.cycles import Cycles
from edge_agent.derivation.downtime import KEEP, Downtimes, reason_key, reason_of
from edge_agent.derivation.oee import figures
from edge_agent.derivation.states import NOT_AVAILABLE, STATE_SIGNALS, STOPS, StateRules, nonzero_code, truthy
from edge_agent.model import DeviceStatus, Event, Quality, Sample, rfc3339

__all__ = ["Deriver", "EVENT_TYPES"]

SNAPSHOT_VERSION = 1
EVENT_TYPES = ("state", "count", "counter_reset", "cycle", "downtime", "downtime_update", "micro_stop",
               "aggregate", "order", "order_summary")
_ORDER_HISTORY = 8


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy through JSON: fast (C), and proof that the snapshot is JSON-able."""
    return json.loads(json.dumps(state))


def _s(x: float | None) -> float | None:
    """Durations on the wire: seconds with millisecond resolution."""
    return None if x is None else round(x, 3)


_ts = attrgetter("ts")

class Deriver:
    def __init__(self, machine: Machine, state: dict[str, Any] | None = None, *,
                 tag_devices: Mapping[str, str] | None = None):
        """`tag_devices` (tag -> device) lets a DeviceStatus clear only that device's tags; without it all."""
        self.machine = machine
        self.rules = StateRules(machine)
        self.calendar = ShiftCalendar(machine.calendar)
        self.catalogue = dict(machine.reasons)
        self._signals_of: dict[str, list[str]] = {}
        for name, tag in machine.signals:
            if tag is not None:
                self._signals_of.setdefault(tag, []).append(name)
        self._tag_devices = dict(tag_devices) if tag_devices is not None else None
        self._reason_signal = "reason_code" if machine.signals.reason_code else "fault_code"
        s = _copy(state) if state and state.get("v") == SNAPSHOT_VERSION else {}
        self._restored = bool(s)
        self._clock: float | None = s.get("clock")
        self._fin: float | None = s.get("fin")  # every second before this is booked
        self._values: dict[str, Any] = s.get("values", {})
        self._down: str | None = s.get("down")
        self._committed: dict[str, Any] | None = s.get("committed")
        self._cand: dict[str, Any] | None = s.get("cand")
        self._episode: dict[str, Any] | None = s.get("episode")  # the stop in progress
        self._order: dict[str, Any] | None = s.get("order")
        self._order_hist: list[list[Any]] = s.get("order_hist", [])
        self._orders: dict[str, dict[str, Any]] = s.get("orders", {})  # order id -> running totals
        self.counters = Counters(machine, s.get("counters"))
        self.cycles = Cycles(machine, s.get("cycles"))
        self.downtimes = Downtimes(machine.id, s.get("downtimes"))
        self.ledger = Ledger(machine.aggregates.interval, self.calendar, s.get("ledger"),
                             at_shifts=machine.aggregates.at_shift_change)
        if state and "v" not in state and state.get("counter") is not None and self.counters.primary:
            self.counters.last[self.counters.primary] = int(state["counter"])  # snapshot of the minimal deriver

    def snapshot(self) -> dict[str, Any]:
        """A detached, JSON-able copy: the caller may keep it while the deriver goes on."""
        return _copy({
            "v": SNAPSHOT_VERSION, "clock": self._clock, "fin": self._fin, "values": self._values,
            "down": self._down, "committed": self._committed, "cand": self._cand, "episode": self._episode,
            "order": self._order, "order_hist": self._order_hist, "orders": self._orders,
            "counters": self.counters.snapshot(), "cycles": self.cycles.snapshot(),
            "downtimes": self.downtimes.snapshot(), "ledger": self.ledger.snapshot(),
        })

    # ------------------------------------------------------------ the interface

    def step(self, items: Sequence[Sample | DeviceStatus]) -> list[Event]:
        """One poll cycle: samples and device status changes, evaluated together at their latest time."""
        if not items:
            return []
        events: list[Event] = []
        t = self._begin(max(map(_ts, items)), events)
        self.ledger.pass_time(t)  # counts at t belong to the interval holding t
        wanted = self._signals_of  # a poll may hold many tags; only this machine's signals matter
        for item in [i for i in items if not isinstance(i, Sample) or i.tag in wanted]:
            if isinstance(item, DeviceStatus):
                self._device(item)
            elif isinstance(item, Sample):
                self._sample(item, t, events)
        self._note_reason()
        total, good, scrap, cycle_count = self.counters.take()
        if total or good or scrap:
            self.ledger.add(t, total=total, good=good, scrap=scrap)
            events.append(self._event("count", t, {
                "count": total, "good": good, "scrap": scrap, "counter": self.counters.raw(),
                "tag": self.counters.tags.get(self.counters.primary or "")}))
        cycle = self.cycles.take(t, total, cycle_count)
        if cycle:
            self.ledger.add(t, cycles=cycle["cycles"])
            events.append(self._event("cycle", t, {**cycle, "ideal_cycle_time": self._ideal(self._order)}))
        self._advance(t, events)
        self._observe(t, events)
        self._advance(t, events)
        return events

    def tick(self, now: float) -> list[Event]:
        """Wall-clock time passes: debounce expiry, micro-stop threshold, aggregates."""
        events: list[Event] = []
        self._advance(self._begin(now, events), events)
        return events

    def command(self, cmd: Mapping[str, Any], now: float) -> list[Event]:
        """set_order / set_downtime_reason; ValueError (and no change at all) for a bad command."""
        if not isinstance(cmd, Mapping):
            raise ValueError("a command must be a JSON object")
        name = cmd.get("command")
        if name == "set_order":
            ctx = orders.parse_set_order(dict(cmd))
            apply = lambda t, ev: self._set_order(ctx, t, ev)  # noqa: E731
        elif name == "set_downtime_reason":
            rec, reason, code = self._parse_classification(cmd)
            apply = lambda t, ev: self._classify(rec, reason, code, t, ev)  # noqa: E731
        else:
            raise ValueError(f"unknown command {name!r} (expected set_order or set_downtime_reason)")
        events: list[Event] = []
        t = self._begin(now, events)
        self._advance(t, events)
        apply(t, events)
        return events

    def remember_event_ids(self, stored: Iterable[tuple[str, Event]]) -> None:
        """After the buffer commit: learn event ids so the MES may classify a downtime by event_id."""
        for event_id, ev in stored:
            if ev.machine == self.machine.id and ev.type in ("downtime", "downtime_update"):
                self.downtimes.remember(event_id, ev.fields["downtime_id"])

    # ------------------------------------------------------------ inputs

    def _sample(self, item: Sample, t: float, events: list[Event]) -> None:
        signals = self._signals_of.get(item.tag)
        if not signals:
            return
        good = item.quality is not Quality.BAD and item.value is not None
        for sig in signals:
            if sig in STATE_SIGNALS:
                if good:
                    self._values[sig] = item.value
                else:
                    self._values.pop(sig, None)
                    if sig in self.rules.base:
                        self._down = f"{item.tag}: {item.error or 'bad quality'}"
            if not good:
                continue
            if sig in COUNTER_SIGNALS:
                reset = self.counters.update(sig, item.value)
                if reset:
                    events.append(self._event("counter_reset", t, reset))
            elif sig == "cycle_complete":
                self.cycles.on_bit(truthy(item.value))

    def _device(self, status: DeviceStatus) -> None:
        if self._tag_devices is None:
            tags = list(self._signals_of)
        else:
            tags = [t for t in self._signals_of if self._tag_devices.get(t) == status.device]
        if status.connected or not tags:
            return  # values come back with the next samples
        self._down = f"{status.device}: {status.error or 'disconnected'}"
        for tag in tags:
            for sig in self._signals_of[tag]:
                self._values.pop(sig, None)
        self.cycles.lost()

    def _note_reason(self) -> None:
        """The first non-zero reason code seen during a stop names it (unless the MES already did)."""
        ep = self._episode
        code = nonzero_code(self._values.get(self._reason_signal))
        if ep is None or code is None or ep["code"] is not None:
            return
        ep["code"] = code
        rec = self.downtimes.get(ep["downtime_id"])
        if rec is not None and rec["reason_source"] in (None, "state"):
            rec["reason"], rec["reason_source"] = reason_of(code, rec["state"], self.catalogue)
            rec["reason_code"] = code

    # ------------------------------------------------------------ the timeline

    def _begin(self, t: float, events: list[Event]) -> float:
        """Start the timeline, or after a restart report the unobserved gap as not_available."""
        if self._clock is None:
            self._clock = self._fin = t
            self.ledger.begin(t, self._order)
        elif (self._restored and t - self._clock > self.machine.state.restart_gap
              and self._committed is not None and self._committed["state"] != NOT_AVAILABLE):
            self._cand = None
            self._values.clear()
            self.cycles.lost()
            self._commit({"state": NOT_AVAILABLE, "mode": None, "since": self._clock,
                          "source": {"signal": "agent", "tag": None, "value": "restart", "values": {}}}, events)
        self._restored = False
        return max(t, self._clock)

    def _advance(self, t: float, events: list[Event]) -> None:
        self._clock = max(self._clock, t)
        self.ledger.pass_time(self._clock)
        c = self._cand
        if c is not None and self._clock - c["since"] >= self.machine.state.debounce:
            self._cand = None
            self._commit(c, events)
        ep = self._episode
        if ep is not None and ep["downtime_id"] is None and \
                self._known() - ep["start"] >= self.machine.state.micro_stop:
            self._open_downtime(ep["start"], events)  # long enough: not a micro-stop
        self._book()
        self._emit_ready(events)

    def _observe(self, t: float, events: list[Event]) -> None:
        """What the values say now becomes the candidate state (or, the first time, the state)."""
        if not self.rules.enabled:
            return
        if self._committed is None and self._down is None and not any(s in self._values for s in self.rules.base):
            return  # nothing known yet
        v = self.rules.evaluate(self._values, self._down)
        new = {"state": v.state, "mode": v.mode, "since": t, "source": v.source}
        k, c = self._committed, self._cand
        if k is None:
            self._commit(new, events)
        elif (v.state, v.mode) == (k["state"], k["mode"]):
            self._cand = None  # a flicker shorter than the debounce: absorbed
        elif c is None or (v.state, v.mode) != (c["state"], c["mode"]):
            self._cand = new

    def _known(self) -> float:
        """Up to here the reported state is certain (a pending candidate may still take over)."""
        return self._cand["since"] if self._cand is not None else self._clock

    def _kind(self) -> str | None:
        """How the current state's time is booked; None = a stop not yet known to be downtime."""
        k = self._committed
        if k is None or k["state"] == NOT_AVAILABLE:
            return "na"
        if k["state"] not in STOPS:
            return "run"
        return "down" if self._episode and self._episode["downtime_id"] else None

    def _book(self, until: float | None = None) -> None:
        until = self._known() if until is None else until
        kind = self._kind()
        if kind is None or until <= self._fin:
            return
        if kind == "run":
            self.ledger.add_time(self._fin, until, "run")
        elif kind == "down":
            self.ledger.add_time(self._fin, until, "down", self._episode["downtime_id"])
        self._fin = until

    def _commit(self, new: dict[str, Any], events: list[Event]) -> None:
        old, s = self._committed, new["since"]
        ep = self._episode
        if old is not None:
            self._book(s)
            if old["state"] in STOPS and new["state"] in STOPS:
                if ep["downtime_id"] and new["state"] != ep["state"]:  # e.g. fault -> setup: a new reason
                    self._close_downtime(s, events)
                    ep.update(state=new["state"], code=nonzero_code(self._values.get(self._reason_signal)))
                    self._open_downtime(s, events)
            elif old["state"] in STOPS:
                if ep["downtime_id"]:
                    self._close_downtime(s, events)
                else:
                    self.ledger.add_time(self._fin, s, "micro")
                    self.ledger.add(s, micro_stops=1)
                    self._fin = max(self._fin, s)
                    events.append(self._event("micro_stop", ep["start"], {
                        "start": rfc3339(ep["start"]), "end": rfc3339(s), "duration": _s(s - ep["start"]),
                        "state": ep["state"], "reason_code": ep["code"]}))
                self._episode = None
        events.append(self._event("state", s, {
            "state": new["state"], "previous": old and old["state"], "mode": new["mode"],
            "previous_duration": None if old is None else _s(s - old["since"]), "source": new["source"]}))
        self._committed = new
        if new["state"] in STOPS and self._episode is None:
            self._episode = {"start": s, "state": new["state"], "downtime_id": None,
                             "code": nonzero_code(self._values.get(self._reason_signal))}

    # ------------------------------------------------------------ downtime

    def _open_downtime(self, start: float, events: list[Event]) -> None:
        ep = self._episode
        rec = self.downtimes.open(start, ep["state"], ep["code"], self.catalogue)
        ep["downtime_id"] = rec["downtime_id"]
        self.ledger.add(start, downtimes=1)
        events.append(self._downtime_event("downtime", rec, start))

    def _close_downtime(self, end: float, events: list[Event]) -> None:
        rec = self.downtimes.get(self._episode["downtime_id"])
        rec.update(status="closed", end=end, planned_duration=_s(self.calendar.planned(rec["start"], end)))
        events.append(self._downtime_event("downtime", rec, end))

    def _downtime_event(self, type_: str, rec: dict[str, Any], ts: float) -> Event:
        end = rec["end"]
        return self._event(type_, ts, {
            "downtime_id": rec["downtime_id"], "status": rec["status"], "start": rfc3339(rec["start"]),
            "end": None if end is None else rfc3339(end), "duration": None if end is None else _s(end - rec["start"]),
            "planned_duration": rec["planned_duration"], "state": rec["state"], "reason": rec["reason"],
            "reason_code": rec["reason_code"], "reason_source": rec["reason_source"]})

    def _parse_classification(self, cmd: Mapping[str, Any]) -> tuple[dict[str, Any], str, Any]:
        ref = cmd.get("downtime_id") or cmd.get("event_id")
        if not isinstance(ref, str) or not ref:
            raise ValueError("set_downtime_reason: give downtime_id (or the event_id of a downtime event)")
        code = cmd.get("reason_code")
        reason = cmd.get("reason")
        if reason is None and code is not None:
            try:
                reason = self.catalogue.get(int(code))
            except (TypeError, ValueError):
                raise ValueError(f"set_downtime_reason: reason_code must be an integer (got {code!r})") from None
            if reason is None:
                raise ValueError(f"set_downtime_reason: reason_code {code!r} is not in the reason catalogue")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("set_downtime_reason: reason must be a non-empty string")
        rec = self.downtimes.find(ref)
        if rec is None:
            raise ValueError(f"set_downtime_reason: no downtime {ref!r} among the last {KEEP} of this machine")
        return rec, reason.strip(), code

    def _classify(self, rec: dict[str, Any], reason: str, code: Any, t: float, events: list[Event]) -> None:
        rec["reason"], rec["reason_source"] = reason, "mes"
        if code is not None:
            rec["reason_code"] = int(code)
        events.append(self._downtime_event("downtime_update", rec, t))

    # ------------------------------------------------------------ orders and aggregates

    def _set_order(self, ctx: dict[str, Any] | None, t: float, events: list[Event]) -> None:
        old = self._order
        if orders.same(ctx, old):
            return  # a repeated command (the MES resends after a reconnect) changes nothing
        if ctx is not None:
            ctx["since"] = old["since"] if old and old["order"] == ctx["order"] else t
        self.ledger.close_at(t, "order_change", order=ctx)
        self._order_hist = (self._order_hist + [[t, ctx, old]])[-_ORDER_HISTORY:]
        self._order = ctx
        events.append(self._event("order", t, {
            "order": orders.on_event(ctx), "previous_order": orders.on_event(old),
            "ideal_cycle_time": self._ideal(ctx), "target_quantity": ctx and ctx["target_quantity"]}))
        self._emit_ready(events)
        if old is not None:
            self._summarize(old["order"], events)

    def _emit_ready(self, events: list[Event]) -> None:
        for start, b in self.ledger.ready(self._fin):
            ctx, end = b["order"], b["end"]
            planned = self.calendar.planned(start, end)
            events.append(self._event("aggregate", end, {
                "start": rfc3339(start), "end": rfc3339(end), "reason": b["reason"],
                **self._figures(b["acc"], planned, self._ideal(ctx)), "order": orders.on_event(ctx)}))
            if ctx is not None:
                tot = self._orders.setdefault(ctx["order"], {"planned": 0.0, "acc": new_acc(), "ctx": ctx})
                tot["planned"] += planned
                tot["end"] = end
                add_acc(tot["acc"], b["acc"])
                self._summarize(ctx["order"], events)

    def _summarize(self, order_id: str, events: list[Event]) -> None:
        """The order summary, once no pending interval belongs to the order any more."""
        pending = [b["order"] for b in self.ledger.closed] + [self.ledger.open["order"]]
        if order_id not in self._orders or any(c and c["order"] == order_id for c in pending):
            return
        tot = self._orders.pop(order_id)
        ctx = tot["ctx"]
        events.append(self._event("order_summary", tot["end"], {
            "start": rfc3339(ctx["since"]), "end": rfc3339(tot["end"]), "target_quantity": ctx["target_quantity"],
            **self._figures(tot["acc"], tot["planned"], self._ideal(ctx)), "order": orders.on_event(ctx)}))

    def _figures(self, acc: dict[str, Any], planned: float, ideal: float | None) -> dict[str, Any]:
        run = acc["run"] + acc["micro"]  # micro-stops are a performance loss, inside run time
        by_reason: dict[str, float] = {}
        for downtime_id, secs in acc["down"].items():
            key = reason_key(self.downtimes.get(downtime_id))
            by_reason[key] = by_reason.get(key, 0.0) + secs
        down = sum(by_reason.values())
        return {
            "planned_time": _s(planned), "run_time": _s(run), "downtime": _s(down),
            "downtime_by_reason": {k: _s(v) for k, v in sorted(by_reason.items())},
            "micro_stop_time": _s(acc["micro"]), "micro_stops": acc["micro_stops"], "downtimes": acc["downtimes"],
            "not_available_time": _s(max(0.0, planned - run - down)),
            "total": acc["total"], "good": acc["good"], "scrap": acc["scrap"], "cycles": acc["cycles"],
            "ideal_cycle_time": ideal, **figures(run, down, acc["total"], acc["good"], ideal),
        }

    def _ideal(self, ctx: dict[str, Any] | None) -> float | None:
        return (ctx or {}).get("ideal_cycle_time") or self.machine.ideal_cycle_time

    def _order_at(self, ts: float) -> dict[str, Any] | None:
        """The order that was current at ts (events are sometimes dated back by the debounce)."""
        ctx = self._order
        for since, _new, old in reversed(self._order_hist):
            if ts >= since:
                break
            ctx = old
        return ctx

    def _event(self, type_: str, ts: float, fields: dict[str, Any]) -> Event:
        return Event(type_, self.machine.id, ts, {"order": orders.on_event(self._order_at(ts)), **fields})
