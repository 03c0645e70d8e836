"""The consumer's decoder and completed-fetch draining, against the codec's encoder."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from logd_sdk import codec
from logd_sdk._errors import CorruptRecordError
from logd_sdk._fetcher import CompletedFetch, decode_records
from logd_sdk._types import Record, TopicPartition

records_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10**12), st.one_of(st.none(), st.binary(max_size=20)),
              st.one_of(st.none(), st.binary(max_size=40)),
              st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=3)),
    min_size=1, max_size=40)


def section_of(batch):
    header = codec.validate(batch)
    return header, codec.decompress(memoryview(batch)[codec.HEADER_SIZE:header.size], header.codec)


@settings(max_examples=80, deadline=None)
@given(records=records_strategy, base_offset=st.integers(min_value=0, max_value=2**40),
       skip=st.integers(min_value=0, max_value=45))
def test_decode_matches_the_codec(records, base_offset, skip):
    """decode_records yields codec.decode_batch's records as Record objects, from min_offset on."""
    first = records[0][0]
    records = [(first + (ts - first) % 2**31, k, v, h) for ts, k, v, h in records]
    batch = codec.encode_batch(records, base_offset=base_offset)
    header, section = section_of(batch)
    _, expected = codec.decode_batch(batch)
    got = decode_records("t", 3, header, section, base_offset + skip)
    assert all(type(r) is Record for r in got)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in got] == [
        (e.offset, e.timestamp_ms, e.key, e.value, e.headers) for e in expected[skip:]]
    assert all(r.topic == "t" and r.partition == 3 for r in got)


def test_truncated_framing_is_corrupt():
    """A records section that does not add up raises CorruptRecordError, not garbage."""
    batch = codec.encode_batch([(1, b"k", b"value", None)], codec=codec.CODEC_NONE)
    header, section = section_of(batch)
    with pytest.raises(CorruptRecordError):
        decode_records("t", 0, header, section[:-2], 0)
    with pytest.raises(CorruptRecordError):
        decode_records("t", 0, header, section + b"\0", 0)


def test_completed_fetch_hands_out_records_across_polls():
    """take() honours max_records, resumes where it stopped and advances the position."""
    batches = []
    for base in (0, 5, 10):
        batch = codec.encode_batch([(100, b"k", b"%d" % (base + i), None) for i in range(5)], base_offset=base)
        batches.append(section_of(batch))
    completed = CompletedFetch(TopicPartition("t", 0), 1, batches)
    state = SimpleNamespace(position=3)
    out = []
    assert not completed.take(state, 4, out)
    assert [r.offset for r in out] == [3, 4, 5, 6] and state.position == 7
    out = []
    assert completed.take(state, 100, out)
    assert [r.offset for r in out] == list(range(7, 15)) and state.position == 15


def test_records_without_headers_share_a_read_only_empty_list():
    """Records without headers all hold one empty list (one tracked object per record less
    for the garbage collector); it reads, compares, copies and pickles as [] and refuses
    changes, as the immutable Record it belongs to."""
    import copy
    import dataclasses
    import pickle

    batch = codec.encode_batch([(1, b"k", b"a", None), (2, b"k", b"b", None), (3, None, b"c", [("h", b"1")])])
    header, section = section_of(batch)
    first, second, third = decode_records("t", 0, header, section, 0)
    assert first.headers is second.headers
    assert first.headers == [] and isinstance(first.headers, list) and not first.headers
    assert third.headers == [("h", b"1")]
    for mutate in (lambda h: h.append(("x", b"")), lambda h: h.extend([("x", b"")]), lambda h: h.clear(),
                   lambda h: h.insert(0, ("x", b"")), lambda h: h.__setitem__(slice(0, 0), [("x", b"")]),
                   lambda h: h.__iadd__([("x", b"")])):
        with pytest.raises(TypeError):
            mutate(first.headers)
    assert first.headers == [] and second.headers == []
    for copied in (copy.copy(first.headers), copy.deepcopy(first), pickle.loads(pickle.dumps(first))):
        headers = copied if isinstance(copied, list) else copied.headers
        assert type(headers) is list and headers == []
    assert pickle.loads(pickle.dumps(first)) == first
    as_dict = dataclasses.asdict(first)
    assert type(as_dict["headers"]) is list and as_dict["headers"] == []
    with pytest.raises(TypeError):
        first.headers.__init__([("x", b"")])
    assert first.headers == []
