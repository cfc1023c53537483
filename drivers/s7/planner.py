"""Read planning for S7: tags in, as few request PDUs as the negotiated PDU size allows out.

Pure function, so it can be tested with tables and its request count checked against
the read jobs a real server counts.

How a plan is made:

1. **Ranges.** Tags of the same area and DB, sorted by byte, are merged into one
   contiguous byte range while the gap to the next tag is at most `max_gap` bytes
   and the range still fits one read item (PDU - 18 bytes of payload). Reading a few
   unused bytes is cheaper than another item: an item costs 12 bytes of request,
   4 (+1 fill) bytes of response and one of at most 20 item slots.
2. **Requests.** Ranges are packed into multi-variable read requests (S7 "read var"
   with up to 20 items) under both PDU budgets:
     request  = 10 (header) + 2 + 12 per item                          <= PDU
     response = 12 (header) + 2 + sum(4 + bytes, + 1 fill if odd and not last) <= PDU
   First greedily, request after request: the largest range that still fits; when
   none fits whole, a range is cut at a tag boundary to fill the request, so every
   request but the last is full (by bytes or by items). Then, if the bounds
   (items / 20, bytes / PDU) leave room for fewer requests, a balanced packing into
   that many is tried (largest pieces first, each into the request with the most
   room left), which mixes big and small ranges so both budgets are used; the plan
   with fewer requests wins. A tag is never cut, so every value comes from one item
   of one response (consistent), except a single value larger than one item (e.g.
   STRING[254] with a 240-byte PDU), which is read in byte chunks.
3. Tags named in `alone` (refused by the PLC inside a merged read) get an item of
   their own and no other range reads across their bytes.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.s7.address import S7Address

MAX_ITEMS = 20  # items per read request (S7-300/400 and snap7 limit)
REQUEST_HEADER = 10 + 2  # job header + function code and item count
ITEM_SPEC = 12  # address specification per item in the request
RESPONSE_HEADER = 12 + 2  # ack-data header (with error class/code) + function code and item count
ITEM_HEADER = 4  # return code, transport size, length per item in the response
DEFAULT_MAX_GAP = 32


@dataclass(slots=True)
class Range:
    """Contiguous bytes of one area/DB holding one or more tags."""

    area: str
    db: int
    start: int
    end: int
    members: list[tuple[str, S7Address]] = field(default_factory=list)  # (tag name, address)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def block(self) -> str:
        return f"DB{self.db}" if self.area == "DB" else self.area


@dataclass(frozen=True, slots=True)
class Item:
    """One address specification of a request: `size` bytes of `ranges[range]` from `start`."""

    range: int  # index into Plan.ranges
    area: str
    db: int
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(slots=True)
class Request:
    items: list[Item] = field(default_factory=list)

    @property
    def request_bytes(self) -> int:
        return REQUEST_HEADER + ITEM_SPEC * len(self.items)

    @property
    def response_bytes(self) -> int:
        sizes = [i.size for i in self.items]
        return RESPONSE_HEADER + sum(ITEM_HEADER + s for s in sizes) + sum(s % 2 for s in sizes[:-1])


@dataclass(slots=True)
class Plan:
    pdu_size: int
    ranges: list[Range]
    requests: list[Request]


def max_items(pdu_size: int, limit: int = MAX_ITEMS) -> int:
    """Items one request may carry: the protocol limit and the request PDU budget."""
    return max(1, min(limit, MAX_ITEMS, (pdu_size - REQUEST_HEADER) // ITEM_SPEC))


def max_payload(pdu_size: int) -> int:
    """Bytes one item alone may read (a single-item response filling the PDU)."""
    return pdu_size - RESPONSE_HEADER - ITEM_HEADER


def plan(
    tags: Iterable[tuple[str, S7Address]],
    pdu_size: int,
    max_gap: int = DEFAULT_MAX_GAP,
    item_limit: int = MAX_ITEMS,
    alone: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """(tag name, address) pairs -> ranges and read requests for a negotiated `pdu_size`.

    `max_gap` < 0 disables merging (every tag its own range); tags named in `alone`
    are never merged with others (the driver puts tags there that the PLC refused).
    """
    if pdu_size < RESPONSE_HEADER + ITEM_HEADER + 8:
        raise ValueError(f"PDU size {pdu_size} is too small to read anything")
    ranges = _ranges(tags, max_gap, max_payload(pdu_size), alone)
    return Plan(pdu_size, ranges, _pack(ranges, pdu_size, max_items(pdu_size, item_limit)))


def _ranges(tags: Iterable[tuple[str, S7Address]], max_gap: int, limit: int,
            alone: frozenset[str] | set[str] = frozenset()) -> list[Range]:
    groups: dict[tuple[str, int], list[tuple[str, S7Address]]] = {}
    barriers: dict[tuple[str, int], list[tuple[int, int]]] = {}  # bytes of lone tags: no range reads across
    out: list[Range] = []
    for name, addr in tags:
        if name in alone:
            out.append(Range(addr.area, addr.db, addr.start, addr.end, [(name, addr)]))
            barriers.setdefault((addr.area, addr.db), []).append((addr.start, addr.end))
        else:
            groups.setdefault((addr.area, addr.db), []).append((name, addr))
    for (area, db), members in sorted(groups.items()):
        members.sort(key=lambda m: (m[1].start, -m[1].end, m[0]))
        walls = barriers.get((area, db), [])
        current: Range | None = None
        for name, addr in members:
            if (
                current is not None
                and addr.start - current.end <= max_gap
                and max(current.end, addr.end) - current.start <= limit
                and not any(s < addr.start and current.end < e for s, e in walls)
            ):
                current.end = max(current.end, addr.end)
                current.members.append((name, addr))
                continue
            current = Range(area, db, addr.start, addr.end, [(name, addr)])
            out.append(current)
    out.sort(key=lambda r: (r.area, r.db, r.start, r.end))
    return out


@dataclass(slots=True)
class _Piece:
    """Part of a range still to be placed: a run of atoms (spans a cut may not split)."""

    range: int
    atoms: list[tuple[int, int]]  # (start, end), ascending, non-overlapping

    @property
    def start(self) -> int:
        return self.atoms[0][0]

    @property
    def size(self) -> int:
        return self.atoms[-1][1] - self.atoms[0][0]


def _atoms(r: Range, limit: int) -> list[tuple[int, int]]:
    """Spans of a range that must stay in one item: overlapping tags glued; oversize values chunked."""
    spans: list[list[int]] = []
    for _, addr in r.members:  # sorted by start
        if spans and addr.start < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], addr.end)
        else:
            spans.append([addr.start, addr.end])
    out: list[tuple[int, int]] = []
    for s, e in spans:
        while e - s > limit:  # one value bigger than an item: read in chunks (may tear)
            out.append((s, s + limit))
            s += limit
        out.append((s, e))
    return out


def _pieces(ranges: list[Range], limit: int) -> list[_Piece]:
    pending: list[_Piece] = []
    for i, r in enumerate(ranges):
        atoms = _atoms(r, limit)
        # a range never exceeds one item unless it is one oversize value: its chunks become pieces
        if r.size > limit:
            pending.extend(_Piece(i, [a]) for a in atoms)
        else:
            pending.append(_Piece(i, atoms))
    return pending


def _order(pieces: list[_Piece]) -> None:
    """Largest first; ties in address order, so plans are stable."""
    pieces.sort(key=lambda p: (-p.size, p.range, p.start))


class _Bin:
    """A request being filled: response bytes used (with fill bytes) and items."""

    def __init__(self) -> None:
        self.used = RESPONSE_HEADER
        self.pieces: list[_Piece] = []

    def room(self, pdu_size: int) -> int:
        """Payload bytes one more item may carry (its own fill byte is not sent if it stays last)."""
        return pdu_size - self.used - ITEM_HEADER

    def add(self, piece: _Piece) -> None:
        self.pieces.append(piece)
        self.used += ITEM_HEADER + piece.size + piece.size % 2


def _pack(ranges: list[Range], pdu_size: int, items_per_request: int) -> list[Request]:
    """The fewest requests found: greedy request by request, then balanced packing into fewer if it fits."""
    pieces = _pieces(ranges, max_payload(pdu_size))
    best = _pack_greedy(list(pieces), pdu_size, items_per_request)
    # binary search between the bounds and the greedy count for the fewest requests a balanced packing fills
    lo = max(-(-len(pieces) // items_per_request),
             -(-sum(ITEM_HEADER + p.size for p in pieces) // (pdu_size - RESPONSE_HEADER)))
    hi = len(best) - 1
    while lo <= hi:
        n = (lo + hi) // 2
        bins = _pack_balanced(list(pieces), n, pdu_size, items_per_request)
        if bins is None:
            lo = n + 1
        else:
            best, hi = bins, len(bins) - 1
    return [Request([_item(ranges, p) for p in b.pieces]) for b in best]


def _item(ranges: list[Range], piece: _Piece) -> Item:
    r = ranges[piece.range]
    return Item(piece.range, r.area, r.db, piece.start, piece.size)


def _pack_greedy(pending: list[_Piece], pdu_size: int, items_per_request: int) -> list[_Bin]:
    """Fill one request after the other: the largest piece that fits, else a piece cut to fit."""
    _order(pending)
    keys = [-p.size for p in pending]  # ascending, for bisect
    bins: list[_Bin] = []
    while pending:
        b = _Bin()
        while len(b.pieces) < items_per_request and pending:
            room = b.room(pdu_size)
            index = bisect.bisect_left(keys, -room)  # the largest piece with size <= room
            if index < len(pending):
                keys.pop(index)
                b.add(pending.pop(index))
                continue
            cut = _cut(pending, room)
            if cut is None:
                break
            keys = [-p.size for p in pending]
            b.add(cut)
        bins.append(b)
    return bins


def _pack_balanced(pending: list[_Piece], n: int, pdu_size: int, items_per_request: int) -> list[_Bin] | None:
    """Worst-fit decreasing into at most `n` requests (None if it does not fit).

    Each piece, largest first, goes to the request with the most room left, so large
    pieces spread out and small ones fill the rest: both budgets (bytes and items)
    are balanced. A piece that fits nowhere whole is cut to fill the roomiest request.
    """
    _order(pending)
    bins = [_Bin() for _ in range(n)]
    roomiest = [(-b.room(pdu_size), i) for i, b in enumerate(bins)]  # a heap of requests with free item slots
    heapq.heapify(roomiest)
    while pending:
        if not roomiest:
            return None
        b = bins[roomiest[0][1]]
        room = b.room(pdu_size)
        if pending[0].size <= room:
            b.add(pending.pop(0))
        else:
            cut = _cut(pending, room)
            if cut is None:
                return None
            b.add(cut)
        _, i = heapq.heappop(roomiest)
        if len(b.pieces) < items_per_request:
            heapq.heappush(roomiest, (-b.room(pdu_size), i))
    return [b for b in bins if b.pieces]


def _cut(pending: list[_Piece], room: int) -> _Piece | None:
    """Split the largest piece whose leading atoms fit `room`; the rest stays pending."""
    for index, piece in enumerate(pending):
        n = 0
        while n < len(piece.atoms) and piece.atoms[n][1] - piece.start <= room:
            n += 1
        if 0 < n < len(piece.atoms):
            pending[index] = _Piece(piece.range, piece.atoms[n:])
            _order(pending)
            return _Piece(piece.range, piece.atoms[:n])
    return None


def lower_bound(plan_: Plan, item_limit: int = MAX_ITEMS) -> int:
    """No plan of the same ranges can use fewer requests than this (items and bytes)."""
    per_request = max_items(plan_.pdu_size, item_limit)
    by_items = -(-len(plan_.ranges) // per_request)
    limit = max_payload(plan_.pdu_size)
    total = sum(ITEM_HEADER + sum(e - s for s, e in _atoms(r, limit)) for r in plan_.ranges)
    by_bytes = -(-total // (plan_.pdu_size - RESPONSE_HEADER))
    return max(by_items, by_bytes, 1 if plan_.ranges else 0)
