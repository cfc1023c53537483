"""Read planner tables: tags in -> requests out (pure), plus optimality against brute force."""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.address import ModbusAddress, parse
from drivers.modbus.planner import MAX_REGISTERS, Break, plan


def tags(*specs: str) -> list[tuple[str, ModbusAddress, int]]:
    """'name=address:type' specs (type default uint16, '@unit' in the address); unit default 1."""
    out = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        address, _, type_ = rest.partition("/")
        addr = parse(address, type_ or ("bool" if address.startswith(("coil", "di")) or "." in address else "uint16"))
        out.append((name, addr, 1 if addr.unit is None else addr.unit))
    return out


def shape(requests) -> list[tuple]:
    return [(r.unit, r.table, r.start, r.count, [n for n, _ in r.members]) for r in requests]


CASES = [
    ("nothing", [], {}, []),
    ("one tag", ["a=hr:7"], {}, [(1, "hr", 7, 1, ["a"])]),
    ("contiguous", ["a=hr:0", "b=hr:1", "c=hr:2/int32"], {}, [(1, "hr", 0, 4, ["a", "b", "c"])]),
    ("sorted by address", ["b=hr:5", "a=hr:1"], {}, [(1, "hr", 1, 5, ["a", "b"])]),
    ("exactly 125 registers", ["a=hr:0", "b=hr:124"], {}, [(1, "hr", 0, 125, ["a", "b"])]),
    ("126 registers split", ["a=hr:0", "b=hr:125"], {}, [(1, "hr", 0, 1, ["a"]), (1, "hr", 125, 1, ["b"])]),
    ("a value never straddles", ["a=hr:0", "b=hr:124/uint32"], {},
     [(1, "hr", 0, 1, ["a"]), (1, "hr", 124, 2, ["b"])]),
    ("a value fits to the last register", ["a=hr:0", "b=hr:123/uint32"], {}, [(1, "hr", 0, 125, ["a", "b"])]),
    ("2000 bits", ["a=coil:0", "b=coil:1999"], {}, [(1, "coil", 0, 2000, ["a", "b"])]),
    ("2001 bits split", ["a=coil:0", "b=coil:2000"], {}, [(1, "coil", 0, 1, ["a"]), (1, "coil", 2000, 1, ["b"])]),
    ("tables apart", ["a=hr:0", "b=ir:0", "c=coil:0", "d=di:0"], {},
     [(1, "coil", 0, 1, ["c"]), (1, "di", 0, 1, ["d"]), (1, "hr", 0, 1, ["a"]), (1, "ir", 0, 1, ["b"])]),
    ("units apart", ["a=hr:0", "b=hr:0@2", "c=hr:1@2"], {}, [(1, "hr", 0, 1, ["a"]), (2, "hr", 0, 2, ["b", "c"])]),
    ("bits share their register", ["w=hr:9", "b0=hr:9.0", "b15=hr:9.15"], {}, [(1, "hr", 9, 1, ["b0", "b15", "w"])]),
    ("overlapping values", ["q=hr:0/uint64", "w=hr:2"], {}, [(1, "hr", 0, 4, ["q", "w"])]),
    ("strings span ceil(n/2)", ["s=hr:0/string[9]", "w=hr:5"], {}, [(1, "hr", 0, 6, ["s", "w"])]),
    ("alone gets its own request, last", ["a=hr:0", "b=hr:1", "c=hr:2"], {"alone": {"b"}},
     [(1, "hr", 0, 3, ["a", "c"]), (1, "hr", 1, 1, ["b"])]),
    ("alone with its registers as a break", ["a=hr:0", "b=hr:1", "c=hr:2"],
     {"alone": {"b"}, "breaks": {Break(1, "hr", 1, 2)}},
     [(1, "hr", 0, 1, ["a"]), (1, "hr", 2, 1, ["c"]), (1, "hr", 1, 1, ["b"])]),
    ("an unreadable gap", ["a=hr:0", "b=hr:10", "c=hr:11"], {"breaks": {Break(1, "hr", 3, 7)}},
     [(1, "hr", 0, 1, ["a"]), (1, "hr", 10, 2, ["b", "c"])]),
    ("a cut point", ["a=hr:0", "b=hr:1", "c=hr:2"], {"breaks": {Break(1, "hr", 2, 2)}},
     [(1, "hr", 0, 2, ["a", "b"]), (1, "hr", 2, 1, ["c"])]),
    ("breaks of another unit or table do not matter", ["a=hr:0", "b=hr:10"],
     {"breaks": {Break(2, "hr", 3, 7), Break(1, "ir", 3, 7)}}, [(1, "hr", 0, 11, ["a", "b"])]),
    ("a break inside one tag does not stop it alone", ["q=hr:0/uint32", "w=hr:5"], {"breaks": {Break(1, "hr", 1, 2)}},
     [(1, "hr", 0, 2, ["q"]), (1, "hr", 5, 1, ["w"])]),
]


@pytest.mark.parametrize("specs, kwargs, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(specs, kwargs, expected):
    assert shape(plan(tags(*specs), **kwargs)) == expected


def test_every_tag_is_planned_exactly_once():
    ts = tags(*(f"t{i}=hr:{i * 7}" for i in range(100)), *(f"c{i}=coil:{i * 50}" for i in range(60)))
    requests = plan(ts, alone={"t3"}, breaks={Break(1, "hr", 100, 110)})
    names = [n for r in requests for n, _ in r.members]
    assert sorted(names) == sorted(n for n, _, _ in ts)
    for r in requests:
        limit = 2000 if r.table == "coil" else MAX_REGISTERS
        assert r.count <= limit
        for _, a in r.members:
            assert r.start <= a.number and a.end <= r.start + r.count


def minimum_requests(spans: list[tuple[int, int]], limit: int) -> int:
    """Brute force: fewest consecutive groups of sorted spans that each fit `limit`."""
    spans = sorted(spans)

    @lru_cache(None)
    def best(i: int) -> int:
        if i == len(spans):
            return 0
        result, end = len(spans), 0
        for j in range(i, len(spans)):
            end = max(end, spans[j][0] + spans[j][1])
            if end - spans[i][0] > limit:
                break
            result = min(result, 1 + best(j + 1))
        return result

    return best(0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.sampled_from(["uint16", "uint32", "uint64"])), max_size=25))
def test_greedy_plan_is_minimal(points):
    ts = [(f"t{i}", parse(f"hr:{n}", t), 1) for i, (n, t) in enumerate(points)]
    requests = plan(ts)
    assert len(requests) == minimum_requests([(a.number, a.width) for _, a, _ in ts], MAX_REGISTERS)
