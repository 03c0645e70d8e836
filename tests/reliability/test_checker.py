"""The history checker finds each kind of violation (so the crash loop can fail)."""

from __future__ import annotations

from .history import FAILED, OK, UNKNOWN, History, Read, check


def _history(*sends):
    history = History()
    for i, (partition, value, status, offset) in enumerate(sends):
        entry = history.send("p0", partition, value, i)
        history.complete(entry, status, offset)
    return history


def _final(*values):
    return {0: [Read(0, offset, value) for offset, value in enumerate(values)]}


def test_valid_history_passes():
    """A history whose acked sends are all in place, with an unknown send present once, is valid."""
    history = _history((0, b"a", OK, 0), (0, b"b", UNKNOWN, None), (0, b"c", OK, 2))
    history.poll("s1", [Read(0, 0, b"a"), Read(0, 1, b"b")])
    result = check(history, _final(b"a", b"b", b"c"))
    assert result.valid, result.summary()


def test_each_violation_is_reported():
    """Lost, gap, garbage, failed-send read, offset reuse, non-contiguous polls, reorder
    and duplicates are each named."""
    history = _history((0, b"a", OK, 0), (0, b"lost", OK, 1), (0, b"f", FAILED, None), (0, b"d", UNKNOWN, None),
                       (0, b"late", OK, 0))
    history.poll("s1", [Read(0, 0, b"a"), Read(0, 2, b"zzz")])
    result = check(history, {0: [Read(0, 0, b"a"), Read(0, 2, b"f"), Read(0, 3, b"junk"), Read(0, 4, b"d"),
                                 Read(0, 5, b"d")]})
    kinds = {kind for kind, items in result.anomalies.items() if items}
    assert kinds == {"lost", "gaps", "garbage", "read of a failed send", "offset reuse", "non-contiguous polls",
                     "reordered", "duplicated"}, result.summary()
    assert not result.valid


def test_tolerated_duplicates_keep_the_history_valid():
    """With tolerate_duplicates, a retried acked send read twice is reported but not fatal."""
    history = _history((0, b"a", OK, 1))
    result = check(history, _final(b"a", b"a"), tolerate_duplicates=True)
    assert result.valid and result.anomalies["duplicated"]
    assert not check(history, _final(b"a", b"a")).valid
