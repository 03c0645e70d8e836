#!/usr/bin/env python3
"""Benchmark of the storage engine against plain file I/O of the same bytes.

Appends N records of 100 bytes in batches of 1,000 (zstd and none), with the default
flush policy ("group", one appender: one fsync per append), then reads them all back in
1 MiB fetches (best of 3 passes, from the page cache). Measured in the same run on the same file system: sequential ``write()``
+ ``fsync()`` of the same batch bytes (one fsync per batch, the same durability) and
sequential ``read()`` of the file in 1 MiB chunks. Engine and raw runs alternate three
times; the medians are reported. Also the codec's encode and decode
cost per record.

    python scripts/bench_storage.py [--records N] [--json] [--dir DIR]

With ``--json`` the last line is one JSON object (``append_mb_s``, ``read_mb_s``,
``raw_write_mb_s``, ``raw_read_mb_s``, ``encode_us_per_record``,
``decode_us_per_record`` for the "none" codec, plus the same per codec and the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from logd_sdk import codec
from logd.storage import LogConfig, PartitionLog

VALUE_BYTES = 100
BATCH_RECORDS = 1_000
READ_BYTES = 1 << 20
READ_PASSES = 3  # reads from the page cache take milliseconds: keep the best of a few
ROUNDS = 3
MB = 1e6


def make_values(count: int) -> list[bytes]:
    """Text-like values: compressible about as much as typical JSON events."""
    rng = random.Random(42)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    values = []
    for i in range(count):
        value = b'{"id":%d,"event":"' % i + b" ".join(rng.choice(words) for _ in range(20))
        values.append(value[:VALUE_BYTES].ljust(VALUE_BYTES, b"."))
    return values


def encode_all(values: list[bytes], codec_id: int) -> tuple[list[bytes], float]:
    """Encode the values into batches; returns them and the time taken (s)."""
    now_ms = int(time.time() * 1000)
    batches = []
    started = time.perf_counter()
    for start in range(0, len(values), BATCH_RECORDS):
        chunk = values[start:start + BATCH_RECORDS]
        section, count = codec.encode_records((i, 0, None, v, None) for i, v in enumerate(chunk))
        batches.append(codec.build_batch(section, count, last_offset_delta=count - 1, first_timestamp=now_ms,
                                         max_timestamp=now_ms, codec=codec_id))
    return batches, time.perf_counter() - started


def decode_all(batches: list[bytes]) -> float:
    started = time.perf_counter()
    for batch in batches:
        codec.decode_batch(batch)
    return time.perf_counter() - started


def bench_engine(directory: Path, batches: list[bytes]) -> tuple[float, float, int]:
    """(append seconds, read seconds, bytes read) through PartitionLog with defaults."""
    log = PartitionLog.open(directory, LogConfig())
    started = time.perf_counter()
    for batch in batches:
        log.append(batch)
    append_s = time.perf_counter() - started
    # Where each batch ends -> the offset after it, so that finding the next offset to
    # fetch costs the reading loop nothing (reads return whole batches).
    next_offset_at, position, offset = {}, 0, 0
    for batch in batches:
        position += len(batch)
        offset += codec.read_header(batch).records_count
        next_offset_at[position] = offset
    end = log.high_watermark

    def read_all() -> tuple[float, int]:
        offset, total = 0, 0
        started = time.perf_counter()
        while offset < end:
            total += len(log.read(offset, READ_BYTES))
            offset = next_offset_at[total]
        return time.perf_counter() - started, total

    read_s, total = min(read_all() for _ in range(READ_PASSES))
    log.close()
    return append_s, read_s, total


def bench_raw(path: Path, batches: list[bytes]) -> tuple[float, float]:
    """(write+fsync seconds, read seconds) of the same bytes in a plain file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    started = time.perf_counter()
    for batch in batches:
        os.write(fd, batch)
        os.fsync(fd)
    write_s = time.perf_counter() - started
    os.close(fd)

    def read_all() -> float:
        fd = os.open(path, os.O_RDONLY)
        started = time.perf_counter()
        while os.read(fd, READ_BYTES):
            pass
        elapsed = time.perf_counter() - started
        os.close(fd)
        return elapsed

    return write_s, min(read_all() for _ in range(READ_PASSES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="logd-bench-", dir=args.dir))
    values = make_values(args.records)
    results: dict[str, float] = {"records": args.records}
    try:
        for name, codec_id in (("none", codec.CODEC_NONE), ("zstd", codec.CODEC_ZSTD)):
            batches, encode_s = encode_all(values, codec_id)
            decode_s = decode_all(batches)
            size = sum(map(len, batches))
            # Engine and raw runs alternate, ROUNDS times, and each keeps its median:
            # fsync latency drifts over seconds (other tenants of the disk).
            engine_runs, raw_runs = [], []
            for round_number in range(ROUNDS):
                engine_runs.append(bench_engine(root / f"bench-{name}-{round_number}", batches))
                raw_runs.append(bench_raw(root / f"raw-{name}-{round_number}", batches))
                shutil.rmtree(root / f"bench-{name}-{round_number}")
                os.unlink(root / f"raw-{name}-{round_number}")
            assert all(total == size for _, _, total in engine_runs)
            append_s = statistics.median(run[0] for run in engine_runs)
            read_s = statistics.median(run[1] for run in engine_runs)
            raw_write_s = statistics.median(run[0] for run in raw_runs)
            raw_read_s = statistics.median(run[1] for run in raw_runs)
            r = {
                "bytes": size,
                "encode_us_per_record": encode_s / args.records * 1e6,
                "decode_us_per_record": decode_s / args.records * 1e6,
                "append_records_s": args.records / append_s,
                "append_mb_s": size / append_s / MB,
                "read_records_s": args.records / read_s,
                "read_mb_s": size / read_s / MB,
                "raw_write_mb_s": size / raw_write_s / MB,
                "raw_read_mb_s": size / raw_read_s / MB,
            }
            r["append_ratio"] = r["append_mb_s"] / r["raw_write_mb_s"]
            r["read_ratio"] = r["read_mb_s"] / r["raw_read_mb_s"]
            print(f"[{name}] {size / MB:.1f} MB in {len(batches)} batches")
            print(f"  encode {r['encode_us_per_record']:.3f} us/record   decode {r['decode_us_per_record']:.3f} us/record")
            print(f"  append {r['append_records_s']:,.0f} records/s  {r['append_mb_s']:.1f} MB/s   "
                  f"raw write+fsync {r['raw_write_mb_s']:.1f} MB/s   ratio {r['append_ratio']:.2f}")
            print(f"  read   {r['read_records_s']:,.0f} records/s  {r['read_mb_s']:.1f} MB/s   "
                  f"raw read {r['raw_read_mb_s']:.1f} MB/s   ratio {r['read_ratio']:.2f}")
            for key, value in r.items():
                results[f"{name}_{key}"] = value
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for key in ("append_mb_s", "read_mb_s", "raw_write_mb_s", "raw_read_mb_s",
                "encode_us_per_record", "decode_us_per_record", "append_ratio", "read_ratio"):
        results[key] = results[f"none_{key}"]
    if args.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
