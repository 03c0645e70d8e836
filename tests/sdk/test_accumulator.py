"""The record accumulator: framing, batch limits, linger, muting, retries, buffer memory."""

import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from logd_sdk import codec
from logd_sdk._accumulator import RecordAccumulator, framed_size
from logd_sdk._errors import LogdTimeoutError, RecordTooLargeError

BIG = 1 << 30


def make(batch_size=1000, linger_ms=5.0, buffer_memory=BIG, max_block_ms=50):
    return RecordAccumulator(batch_size=batch_size, linger_ms=linger_ms, buffer_memory=buffer_memory,
                             max_block_ms=max_block_ms, delivery_timeout_ms=60000)


def append(acc, partition, key, value, headers=None, ts=1000, topic="t", limit=None):
    encoded = [(k.encode(), v) for k, v in headers] if headers else None
    size = framed_size(key, value, encoded)
    return acc.append(topic, partition, 4, ts, key, value, encoded, size, limit or acc.batch_size)


records_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=20)), st.one_of(st.none(), st.binary(max_size=40)),
              st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=5))), max_size=3),
              st.integers(min_value=0, max_value=10**6)),
    min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(records=records_strategy)
def test_framed_batches_decode_to_what_was_sent(records):
    """What the accumulator frames and the batch encodes, codec.decode_batch reads back."""
    acc = make(batch_size=BIG)
    futures = [append(acc, 0, key, value, headers, ts=ts) for key, value, headers, ts in records]
    with acc.lock:
        batches, _ = acc.drain_locked(time.monotonic() + 1, set(), BIG)
    assert len(batches) == 1 and batches[0].count == len(records)
    data = batches[0].encode(codec.CODEC_ZSTD, -1, -1, -1)
    header, decoded = codec.decode_batch(data)
    assert header.records_count == len(records)
    assert header.max_timestamp == max(ts for *_, ts in records)
    for (key, value, headers, ts), record, future in zip(records, decoded, futures):
        assert (record.key, record.value, record.headers, record.timestamp_ms) == (key, value, list(headers), ts)
        assert future.timestamp_ms == ts
    assert [r.offset for r in decoded] == list(range(len(records)))


def test_batches_close_at_the_byte_limit():
    """A batch takes records until the next would pass batch_size; a bigger record goes alone."""
    acc = make(batch_size=100)
    for _ in range(10):
        append(acc, 0, None, b"x" * 22)  # 40 bytes framed: two per batch
    append(acc, 0, None, b"y" * 500)
    queue = acc.queues["t"][0]
    assert [b.count for b in queue] == [2, 2, 2, 2, 2, 1]
    assert all(b.size <= 100 for b in list(queue)[:-1])
    assert all(b.closed for b in list(queue)[:-1])


def test_drain_waits_for_linger_unless_full_or_flushing():
    """An open batch is drained after linger_ms, at once when full or while flushing."""
    acc = make(batch_size=1000, linger_ms=50)
    append(acc, 0, None, b"v")
    now = time.monotonic()
    with acc.lock:
        batches, next_ready = acc.drain_locked(now, set(), BIG)
        assert batches == [] and next_ready is not None and 0 < next_ready - now <= 0.05
        acc.flushing += 1
        batches, _ = acc.drain_locked(now, set(), BIG)
        acc.flushing -= 1
    assert len(batches) == 1
    append(acc, 1, None, b"z" * 1000)  # full on arrival
    with acc.lock:
        batches, _ = acc.drain_locked(time.monotonic(), set(), BIG)
    assert [b.partition for b in batches] == [1]


def test_muted_partitions_and_request_size():
    """Muted partitions are skipped; a drain stops at max_request_size."""
    acc = make(batch_size=100, linger_ms=0)
    for partition in range(3):
        for _ in range(4):
            append(acc, partition, None, b"x" * 82)  # one record per batch
    with acc.lock:
        batches, _ = acc.drain_locked(time.monotonic() + 1, {("t", 0)}, 250)
    assert [b.partition for b in batches] == [1, 1, 1]
    with acc.lock:
        batches, _ = acc.drain_locked(time.monotonic() + 1, set(), BIG)
    # The next drain starts after the partition the full request stopped at.
    assert [b.partition for b in batches] == [2, 2, 2, 2, 0, 0, 0, 0, 1]


def test_full_requests_take_turns_among_the_partitions():
    """When every partition has more ready than one request holds, successive drains
    start where the last one stopped: every partition is served within a round, none
    waits until the others run dry (8 partitions, requests of 4 batches)."""
    acc = make(batch_size=100, linger_ms=0)
    for partition in range(8):
        for _ in range(3):
            acc.append("t", partition, 8, 1000, None, b"x" * 82, None, 100, 100)
    served = []
    with acc.lock:
        for _ in range(2):
            batches, _ = acc.drain_locked(time.monotonic() + 1, set(), 400)
            assert len(batches) == 4
            served.append(sorted({b.partition for b in batches}))
    assert served == [[0, 1], [2, 3]]
    with acc.lock:
        for _ in range(4):
            acc.drain_locked(time.monotonic() + 1, set(), 400)
    with acc.lock:
        rest, _ = acc.drain_locked(time.monotonic() + 1, set(), BIG)
    assert rest == []  # 6 drains of 4 took all 24 batches, 3 from each partition


def test_requeued_batches_keep_their_order_and_wait_for_backoff():
    """Retried batches go back in front, in order, alone in their request, and wait for retry_at."""
    acc = make(batch_size=100, linger_ms=0)
    for _ in range(3):
        append(acc, 0, None, b"x" * 82)
    with acc.lock:
        first, _ = acc.drain_locked(time.monotonic() + 1, set(), 200)
        assert len(first) == 2
        now = time.monotonic()
        acc.requeue_locked(first, now + 10)
        assert acc.drain_locked(now, set(), BIG)[0] == []
        again, _ = acc.drain_locked(now + 11, set(), BIG)
        rest, _ = acc.drain_locked(now + 11, set(), BIG)
    assert again == first
    assert len(rest) == 1 and rest[0] not in first


def test_send_blocks_for_memory_then_times_out():
    """With buffer_memory used up, append blocks max_block_ms and raises LogdTimeoutError."""
    acc = make(batch_size=1000, buffer_memory=100, max_block_ms=50)
    append(acc, 0, None, b"x" * 70)
    started = time.monotonic()
    with pytest.raises(LogdTimeoutError):
        append(acc, 0, None, b"x" * 70)
    assert 0.04 <= time.monotonic() - started < 2
    with pytest.raises(RecordTooLargeError):
        append(acc, 0, None, b"x" * 200)


def test_blocked_send_resumes_when_memory_is_released():
    """Releasing acknowledged batches wakes a blocked append."""
    acc = make(batch_size=1000, buffer_memory=100, max_block_ms=5000, linger_ms=0)
    append(acc, 0, None, b"x" * 70)
    done = threading.Event()

    def blocked():
        append(acc, 0, None, b"y" * 70)
        done.set()

    thread = threading.Thread(target=blocked)
    thread.start()
    deadline = time.monotonic() + 5
    while acc.memory_waiters == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not done.is_set()
    with acc.lock:
        batches, _ = acc.drain_locked(time.monotonic() + 1, set(), BIG)
        acc.release_locked(batches)
    thread.join(5)
    assert done.is_set()
