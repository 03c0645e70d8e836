#!/usr/bin/env python3
"""Benchmark of the storage engine against plain file I/O of the same bytes.

Appends N records of 100 bytes in batches of 1,000 (zstd and none), with the default
flush policy ("group", one appender: one sync per append), then reads them all back in
1 MiB fetches (from the page cache).

Raw disk speed is measured side by side, on the same file system with the same bytes:
each batch is appended through the engine and ``write()`` + synced to a plain file (the
same call as the engine: ``fdatasync`` on Linux, see ``FileSystem.fsync``), one right
after the other, which goes first alternating, so that both see the same disk from one
moment to the next. Reads alternate a whole pass through the engine with a sequential
``read()`` of the plain file in 1 MiB chunks (best of 5 each). Five such rounds: the
medians are reported, and each ratio is the median of the five rounds' own ratios.
Also the codec's encode and decode cost per record.

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
#: The engine's sync for a log file (``FileSystem.fsync``); the raw loop uses the same.
sync_data = getattr(os, "fdatasync", os.fsync)
READ_PASSES = 5  # reads from the page cache take milliseconds: keep the best of a few
ROUNDS = 5
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


def bench_append(log: PartitionLog, raw_fd: int, batches: list[bytes]) -> tuple[float, float]:
    """(engine seconds, raw seconds) appending every batch, each batch appended through
    the log and written and synced to the plain file one after the other: the two see
    the same disk from one moment to the next (its sync latency drifts over seconds with
    the other tenants of the disk, which made separate runs differ by 20%). Which goes
    first alternates: the first one reads the batch from memory, the second finds it in
    the CPU's cache (a fixed order moved the ratio by 0.01-0.04)."""
    perf = time.perf_counter
    engine_s = raw_s = 0.0
    for i, batch in enumerate(batches):
        if i % 2:
            started = perf()
            os.write(raw_fd, batch)
            sync_data(raw_fd)
            written = perf()
            log.append(batch)
            engine_s += perf() - written
            raw_s += written - started
        else:
            started = perf()
            log.append(batch)
            appended = perf()
            os.write(raw_fd, batch)
            sync_data(raw_fd)
            engine_s += appended - started
            raw_s += perf() - appended
    return engine_s, raw_s


def bench_read(log: PartitionLog, raw_path: Path, batches: list[bytes]) -> tuple[float, float, int]:
    """(engine seconds, raw seconds, bytes the engine read): the best of READ_PASSES
    whole passes each, engine and raw passes alternating."""
    # Where each batch ends -> the offset after it, so that finding the next offset to
    # fetch costs the reading loop nothing (reads return whole batches).
    next_offset_at, position, offset = {}, 0, 0
    for batch in batches:
        position += len(batch)
        offset += codec.read_header(batch).records_count
        next_offset_at[position] = offset
    end = log.high_watermark

    def engine_pass() -> tuple[float, int]:
        offset, total = 0, 0
        started = time.perf_counter()
        while offset < end:
            total += len(log.read(offset, READ_BYTES))
            offset = next_offset_at[total]
        return time.perf_counter() - started, total

    def raw_pass() -> float:
        fd = os.open(raw_path, os.O_RDONLY)
        started = time.perf_counter()
        while os.read(fd, READ_BYTES):
            pass
        elapsed = time.perf_counter() - started
        os.close(fd)
        return elapsed

    engine_passes, raw_passes = [], []
    for _ in range(READ_PASSES):
        engine_passes.append(engine_pass())
        raw_passes.append(raw_pass())
    engine_s, total = min(engine_passes)
    return engine_s, min(raw_passes), total


def bench_round(directory: Path, batches: list[bytes]) -> tuple[float, float, float, float, int]:
    """(engine append s, raw write s, engine read s, raw read s, bytes the engine read)
    through a PartitionLog with the default config and a plain file side by side."""
    log = PartitionLog.open(directory / "log", LogConfig())
    raw_path = directory / "raw"
    raw_fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        append_s, write_s = bench_append(log, raw_fd, batches)
    finally:
        os.close(raw_fd)
    try:
        read_s, raw_read_s, total = bench_read(log, raw_path, batches)
    finally:
        log.close()
    return append_s, write_s, read_s, raw_read_s, total


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
            runs = []
            for round_number in range(ROUNDS):
                directory = root / f"{name}-{round_number}"
                directory.mkdir()
                runs.append(bench_round(directory, batches))
                shutil.rmtree(directory)
            assert all(run[4] == size for run in runs)
            append_s, raw_write_s, read_s, raw_read_s = (statistics.median(run[i] for run in runs) for i in range(4))
            # Ratios within each round (engine and raw saw the same disk), then the median
            # round: a ratio of medians taken from different rounds mixes disk moments.
            append_ratio = statistics.median(run[1] / run[0] for run in runs)
            read_ratio = statistics.median(run[3] / run[2] for run in runs)
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
            r["append_ratio"], r["read_ratio"] = append_ratio, read_ratio
            print(f"[{name}] {size / MB:.1f} MB in {len(batches)} batches")
            print(f"  encode {r['encode_us_per_record']:.3f} us/record   decode {r['decode_us_per_record']:.3f} us/record")
            print(f"  append {r['append_records_s']:,.0f} records/s  {r['append_mb_s']:.1f} MB/s   "
                  f"raw write+sync {r['raw_write_mb_s']:.1f} MB/s   ratio {r['append_ratio']:.2f} (median round)")
            print(f"  read   {r['read_records_s']:,.0f} records/s  {r['read_mb_s']:.1f} MB/s   "
                  f"raw read {r['raw_read_mb_s']:.1f} MB/s   ratio {r['read_ratio']:.2f} (median round)")
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
