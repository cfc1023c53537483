"""The pipeline's value types: the drivers' fast sample constructor equals the plain one."""

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.model import Quality, Sample, good_samples

values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))


@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), values), max_size=30), st.floats(0, 2e9))
def test_good_samples_equal_samples_built_one_by_one(pairs, ts):
    names = [n for n, _ in pairs]
    vals = [v for _, v in pairs]
    fast = good_samples(names, vals, ts)
    assert fast == [Sample(n, v, ts) for n, v in pairs]
    assert all(type(s) is Sample and s.quality is Quality.GOOD and s.error is None for s in fast)


def test_good_samples_fields_are_named():
    (s,) = good_samples(("press.count",), (41,), 12.5)
    assert (s.tag, s.value, s.ts, s.quality, s.error) == ("press.count", 41, 12.5, Quality.GOOD, None)
