"""The performance shortcuts give the same bytes and records as the plain paths."""

import threading
import time
import zlib

import pytest
import zstandard

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


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=50_000))
def test_pooled_zstd_contexts_give_the_bytes_of_fresh_ones(data):
    """The reused contexts compress to the same frame as a fresh level-1 compressor, and
    decompress it back."""
    fresh = zstandard.ZstdCompressor(level=1).compress(data)
    assert codec.compress(data, codec.CODEC_ZSTD) == fresh
    assert codec.decompress(fresh, codec.CODEC_ZSTD) == data


def test_zstd_contexts_are_shared_safely_and_the_idle_ones_stay_bounded():
    """Threads compressing and decompressing at once each get a context of their own
    (right bytes every time); afterwards at most _IDLE_CONTEXTS of each kind stay, and a
    corrupt frame's context is not kept."""
    payloads = [bytes([i]) * (1000 + 37 * i) + b"%d" % i for i in range(16)]
    errors = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        try:
            start.wait(timeout=5)
            for n in range(200):
                data = payloads[(seed + n) % len(payloads)]
                assert codec.decompress(codec.compress(data, codec.CODEC_ZSTD), codec.CODEC_ZSTD) == data
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert 1 <= len(codec._compressors) <= codec._IDLE_CONTEXTS
    assert 1 <= len(codec._decompressors) <= codec._IDLE_CONTEXTS
    idle = len(codec._decompressors)
    frame = codec.compress(payloads[3], codec.CODEC_ZSTD)
    with pytest.raises(codec.CorruptBatchError):
        codec.decompress(frame[:-4] + b"\x00\x01\x02\x03", codec.CODEC_ZSTD)
    assert len(codec._decompressors) == idle - 1


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
