"""The performance shortcuts give the same bytes and records as the plain paths."""

import time
import zlib

from hypothesis import given, settings, strategies as st

from logd_sdk import codec
from logd_sdk._accumulator import RecordAccumulator, framed_size
from logd_sdk._fetcher import decode_records

BIG = 1 << 30


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_crc32_holding_gil_equals_zlib(data, seed):
    """The chunked CRC equals zlib.crc32 for any length and starting value."""
    assert codec.crc32_holding_gil(data, seed) == zlib.crc32(data, seed)


def _filled_batch(compress_ahead: bool):
    acc = RecordAccumulator(batch_size=2_000, linger_ms=5, buffer_memory=BIG, max_block_ms=50,
                            delivery_timeout_ms=60_000)
    for i in range(60):  # several full batches
        key, value = b"user-%05d" % i, b"v" * (i % 50)
        acc.append("t", 0, 1, 1_700_000_000_000 + i, key, value, None, framed_size(key, value, None), 2_000)
    with acc.lock:
        filled = acc.take_filled_locked()
        batches, _ = acc.drain_locked(time.monotonic() + 1, set(), BIG)
    if compress_ahead:
        for batch in filled:
            batch.compress_ahead(codec.CODEC_ZSTD)
    return filled, [batch.encode(codec.CODEC_ZSTD, 7, 0, 0) for batch in batches]


def test_compress_ahead_encodes_the_same_batches():
    """A batch compressed ahead by the producing thread encodes to the same bytes."""
    filled, ahead = _filled_batch(compress_ahead=True)
    _, plain = _filled_batch(compress_ahead=False)
    assert filled and ahead == plain
    assert all(codec.validate(data) for data in ahead)


def test_decode_records_skips_below_min_offset_with_headers():
    """Records below min_offset are skipped (headers included) and the rest decode whole."""
    records = [(1000 + i, b"k%d" % i if i % 3 else None, b"v%d" % i if i % 4 else None,
                [("h", b"x"), ("n", None)] if i % 2 else None) for i in range(20)]
    batch = codec.encode_batch(records, base_offset=100)
    header, expected = codec.decode_batch(batch)
    section = codec.decompress(memoryview(batch)[codec.HEADER_SIZE:], header.codec)
    got = decode_records("t", 0, header, section, 107)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in got] == \
        [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in expected if r.offset >= 107]
