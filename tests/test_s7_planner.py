"""S7 read planning: tables of tags in -> ranges and requests out, plus invariants over random tag sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.s7.address import parse
from drivers.s7.planner import lower_bound, max_items, max_payload, plan


def tags(*specs: tuple[str, str]):
    return [(f"t{i}", parse(a, t)) for i, (a, t) in enumerate(specs)]


def shape(p):
    """Requests as lists of (block, start, size) items, for comparing with a table."""
    out = []
    for r in p.requests:
        out.append([(("DB%d" % i.db) if i.area == "DB" else i.area, i.start, i.size) for i in r.items])
    return out


def test_budgets_follow_the_pdu_size():
    # request: 12 + 12 per item; single-item response: 12 + 2 + 4 + data
    assert (max_items(240), max_items(480), max_items(960)) == (19, 20, 20)
    assert (max_payload(240), max_payload(480), max_payload(960)) == (222, 462, 942)
    assert max_items(480, limit=5) == 5


@pytest.mark.parametrize(
    ("specs", "pdu", "max_gap", "expected"),
    [
        pytest.param([], 480, 32, [], id="nothing"),
        pytest.param([("DB1.DBW0", "INT"), ("DB1.DBW2", "INT"), ("DB1.DBD4", "REAL")], 480, 32,
                     [[("DB1", 0, 8)]], id="adjacent tags merge"),
        pytest.param([("DB1.DBX0.0", "BOOL"), ("DB1.DBB0", "BYTE"), ("DB1.DBW0", "WORD"), ("DB1.DBX1.7", "BOOL")],
                     480, 32, [[("DB1", 0, 2)]], id="overlapping tags share bytes"),
        pytest.param([("DB1.DBW0", "INT"), ("DB1.DBW40", "INT")], 480, 32,
                     [[("DB1", 0, 2), ("DB1", 40, 2)]], id="gap 38 > max_gap 32: two items"),
        pytest.param([("DB1.DBW0", "INT"), ("DB1.DBW40", "INT")], 480, 38,
                     [[("DB1", 0, 42)]], id="gap 38 <= max_gap 38: one item"),
        pytest.param([("DB1.DBW0", "INT"), ("DB1.DBW2", "INT")], 480, -1,
                     [[("DB1", 0, 2), ("DB1", 2, 2)]], id="max_gap -1 never merges"),
        pytest.param([("DB1.DBW0", "INT"), ("DB2.DBW2", "INT"), ("MW4", "INT"), ("IW0", "INT"), ("QW0", "INT")],
                     480, 32, [[("DB1", 0, 2), ("DB2", 2, 2), ("I", 0, 2), ("M", 4, 2), ("Q", 0, 2)]],
                     id="areas and DBs never merge, one multi-read"),
        pytest.param([("DB1.DBB0", "STRING[198]"), ("DB2.DBB0", "STRING[198]"), ("DB3.DBB0", "STRING[198]")],
                     480, 32, [[("DB1", 0, 200), ("DB2", 0, 200)], [("DB3", 0, 200)]],
                     id="response budget: two 200-byte items per 480 PDU"),
        pytest.param([("DB1.DBB0", "STRING[198]"), ("DB2.DBB0", "STRING[198]")], 240, 32,
                     [[("DB1", 0, 200)], [("DB2", 0, 200)]], id="one 200-byte item per 240 PDU"),
        pytest.param([("DB1.DBB0", "STRING[254]")], 240, 32, [[("DB1", 0, 222)], [("DB1", 222, 34)]],
                     id="a value larger than an item is read in chunks"),
    ],
)
def test_plan_table(specs, pdu, max_gap, expected):
    p = plan(tags(*specs), pdu, max_gap)
    assert shape(p) == expected
    assert len(p.requests) == lower_bound(p)


def test_tags_named_alone_are_never_merged():
    t = tags(("DB1.DBW0", "INT"), ("DB1.DBW2", "INT"), ("DB1.DBW4", "INT"))
    assert shape(plan(t, 480)) == [[("DB1", 0, 6)]]
    # a lone tag also stops other tags from being read across its bytes
    assert shape(plan(t, 480, alone={"t1"})) == [[("DB1", 0, 2), ("DB1", 2, 2), ("DB1", 4, 2)]]
    assert shape(plan(t, 480, alone={"t2"})) == [[("DB1", 0, 4), ("DB1", 4, 2)]]


def test_many_scattered_tags_fill_requests_by_item_count():
    scattered = tags(*[(f"DB1.DBD{i * 100}", "REAL") for i in range(40)])
    p480, p240 = plan(scattered, 480), plan(scattered, 240)
    assert [len(r.items) for r in p480.requests] == [20, 20]
    assert [len(r.items) for r in p240.requests] == [19, 19, 2]  # 12 + 12*20 > 240
    assert len(plan(scattered, 480, item_limit=7).requests) == 6


def test_a_range_is_cut_at_a_tag_boundary_to_fill_a_request():
    # three DBs with 75 REALs each (300 bytes): whole, two per 480 PDU do not fit (14 + 2*304 > 480),
    # so the second is cut after 39 REALs to fill the first request: 2 requests instead of 3
    specs = [(f"DB{db}.DBD{4 * i}", "REAL") for db in (1, 2, 3) for i in range(75)]
    p = plan(tags(*specs), 480)
    assert len(p.ranges) == 3
    assert shape(p) == [[("DB1", 0, 300), ("DB2", 0, 156)], [("DB3", 0, 300), ("DB2", 156, 144)]]
    assert [r.response_bytes for r in p.requests] == [14 + 304 + 160, 14 + 304 + 148]


def test_big_and_small_pieces_are_mixed_so_both_budgets_are_used():
    # PDU 240: three 300-byte runs of REALs (each 220 + 80 bytes) and 45 scattered REALs.
    # Filling request by request puts the small ones last, where 19 items per request bind: 7 requests.
    # Spreading the big pieces first and the small ones over the roomiest requests needs 6, the bound.
    specs = [(f"DB1.DBD{100 * i}", "REAL") for i in range(45)]
    specs += [(f"DB{db}.DBD{4 * i}", "REAL") for db in (2, 3, 4) for i in range(75)]
    p = plan(tags(*specs), 240)
    assert len(p.requests) == lower_bound(p) == 6
    assert all(len(r.items) <= 19 and r.response_bytes <= 240 for r in p.requests)


def test_merging_stops_at_the_item_payload():
    # 60 contiguous REALs = 240 bytes; a 240-byte PDU carries 222 per item: 55 REALs, then 5
    p = plan(tags(*[(f"DB1.DBD{4 * i}", "REAL") for i in range(60)]), 240)
    assert [(r.start, r.end) for r in p.ranges] == [(0, 220), (220, 240)]
    assert shape(p) == [[("DB1", 0, 220)], [("DB1", 220, 20)]]


def test_fill_bytes_of_odd_items_are_counted():
    # 19 strings of 23 bytes: every item but the last carries a fill byte in the response
    p = plan(tags(*[(f"DB{db}.DBB0", "STRING[21]") for db in range(1, 20)]), 480)
    for r in p.requests:
        assert r.response_bytes <= 480
    assert sum(len(r.items) for r in p.requests) == 19
    assert [len(r.items) for r in p.requests] == [16, 3]  # 14 + 16*28 - 1 = 461 <= 480 < 14 + 17*28 - 1


def test_planning_thousands_of_tags_stays_fast():
    import time

    strings = tags(*[(f"DB{1 + i}.DBB0", "STRING[254]") for i in range(1000)])  # no two share a request
    scattered = tags(*[(f"DB{1 + i % 50}.DBB{(i // 50) * 97}", "STRING[40]") for i in range(3000)])
    t0 = time.perf_counter()
    assert len(plan(strings, 480).requests) == 1000
    assert len(plan(scattered, 240).requests) >= lower_bound(plan(scattered, 240))
    assert time.perf_counter() - t0 < 5  # was minutes with a linear search over request counts


# ---------------------------------------------------------------- invariants over random tag sets

_TYPES = ["BOOL", "BYTE", "INT", "DINT", "REAL", "LREAL", "STRING[8]", "STRING[100]", "STRING[254]"]


@st.composite
def tag_sets(draw):
    specs = []
    for _ in range(draw(st.integers(0, 60))):
        t = draw(st.sampled_from(_TYPES))
        area = draw(st.sampled_from(["DB1", "DB2", "DB3", "M", "I"]))
        byte = draw(st.integers(0, 2000))
        width = {"BOOL": "X", "INT": "W", "DINT": "D", "REAL": "D"}.get(t, "B")
        suffix = f"{byte}.{draw(st.integers(0, 7))}" if width == "X" else str(byte)
        addr = f"{area}.DB{width}{suffix}" if area.startswith("DB") else (
            f"{area}{suffix}" if width == "X" else f"{area}{width}{suffix}")
        specs.append((addr, t))
    return tags(*specs)


@settings(max_examples=60, deadline=None)
@given(tag_sets(), st.sampled_from([240, 480, 960]), st.integers(-1, 64), st.integers(1, 20),
       st.sets(st.integers(0, 59), max_size=8))
def test_every_plan_covers_every_tag_within_the_pdu(tagset, pdu, max_gap, item_limit, lone):
    alone = {f"t{i}" for i in lone}
    p = plan(tagset, pdu, max_gap, item_limit, alone=alone)
    for rng in p.ranges:
        if any(name in alone for name, _ in rng.members):
            assert len(rng.members) == 1
    items = [i for r in p.requests for i in r.items]
    for r in p.requests:
        assert 1 <= len(r.items) <= max_items(pdu, item_limit)
        assert r.request_bytes <= pdu and r.response_bytes <= pdu
    for index, rng in enumerate(p.ranges):
        mine = [i for i in items if i.range == index]
        assert all(i.area == rng.area and i.db == rng.db for i in mine)
        for _, addr in rng.members:
            assert rng.start <= addr.start and addr.end <= rng.end
            if addr.size <= max_payload(pdu):  # a value is never torn across two items
                assert any(i.start <= addr.start and addr.end <= i.end for i in mine)
            else:
                covered = sorted((i.start, i.end) for i in mine if i.start < addr.end and addr.start < i.end)
                assert covered[0][0] <= addr.start and covered[-1][1] >= addr.end
                assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    assert sorted(name for r in p.ranges for name, _ in r.members) == sorted(name for name, _ in tagset)
    assert len(p.requests) >= lower_bound(p, item_limit)
