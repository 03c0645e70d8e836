"""Unit tests of the broker's parts that need no server: names, configs, batch walking, ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from logd.broker import InvalidConfigError, RecordTooLargeError, TopicConfig
from logd.broker.broker import check_batches, whole_batches_within
from logd.broker.config import CONFIG_KEYS, normalize_overrides
from logd.broker.names import parse_partition_dir_name, partition_dir_name, topic_name_problem
from logd.broker.producer_ids import ProducerIdManager
from logd.server.config import ServerConfigError, load_server_config
from logd_sdk import codec

NAME_CHARS = "abcXYZ019._-"


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=249))
@settings(max_examples=200)
def test_partition_dir_names_round_trip(name):
    """Every legal name maps to partition directories that parse back to (name, partition)."""
    if topic_name_problem(name) is None:
        for partition in (0, 7, 1023):
            assert parse_partition_dir_name(partition_dir_name(name, partition)) == (name, partition)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 250, "é", "a\x00"])
def test_illegal_names(name):
    assert topic_name_problem(name) is not None


def test_not_partition_dirs():
    for name in ("topics", "x-01", "x-", "x-0.abc-delete", "x-0.abc-stray", "-1"):
        assert parse_partition_dir_name(name) is None, name


def test_defaults_are_kafkas():
    config = TopicConfig().to_strings()
    assert list(config) == list(CONFIG_KEYS)
    assert config == {
        "retention.ms": "604800000", "retention.bytes": "-1", "segment.bytes": "1073741824",
        "segment.ms": "604800000", "cleanup.policy": "delete", "delete.retention.ms": "86400000",
        "min.compaction.lag.ms": "0", "min.cleanable.dirty.ratio": "0.5", "max.message.bytes": "1048588",
    }


@given(st.fixed_dictionaries({}, optional={
    "retention.ms": st.integers(-1, 10**12).map(str),
    "segment.bytes": st.integers(1024, 2**31 - 1).map(str),
    "cleanup.policy": st.sampled_from(["delete", "compact", "compact,delete", "delete,compact"]),
    "min.cleanable.dirty.ratio": st.floats(0, 1).map(repr),
    "max.message.bytes": st.integers(61, 64 << 20).map(str),
}))
@settings(max_examples=100)
def test_normalized_overrides_are_a_fixed_point(overrides):
    """Normalising is idempotent and the typed config shows exactly the normalised values."""
    normalized = normalize_overrides(overrides)
    assert normalize_overrides(normalized) == normalized
    strings = TopicConfig.from_overrides(normalized).to_strings()
    assert {key: strings[key] for key in normalized} == normalized


@pytest.mark.parametrize("key,value", [
    ("retention.ms", "1.5"), ("retention.ms", " 5"), ("retention.ms", "1_000"), ("retention.bytes", "-2"),
    ("segment.bytes", "1023"), ("segment.bytes", str(2**31)), ("segment.ms", "0"),
    ("cleanup.policy", "delete,delete"), ("cleanup.policy", ""), ("delete.retention.ms", "-1"),
    ("min.compaction.lag.ms", "x"), ("min.cleanable.dirty.ratio", "nan"), ("min.cleanable.dirty.ratio", "1e1"), ("min.cleanable.dirty.ratio", "inf"),
    ("max.message.bytes", "60"), ("unknown.key", "1"),
])
def test_bad_values_name_their_key(key, value):
    with pytest.raises(InvalidConfigError, match=key.replace(".", r"\.")):
        normalize_overrides({key: value})


def _batches(sizes: list[int]) -> bytes:
    return b"".join(codec.encode_batch([(0, None, bytes(size), None)], codec=codec.CODEC_NONE) for size in sizes)


def test_check_batches_walks_headers():
    data = _batches([10, 20, 30])
    assert check_batches(data, 1000) == 3
    with pytest.raises(RecordTooLargeError):
        check_batches(data, 100)
    with pytest.raises(codec.CorruptBatchError):
        check_batches(data[:-1], 1000)
    with pytest.raises(codec.CorruptBatchError):
        check_batches(data + b"\x00" * 10, 1000)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=8), st.integers(0, 3000), st.booleans())
@settings(max_examples=100)
def test_whole_batches_within(sizes, limit, first):
    """The kept prefix is whole batches within the limit, or exactly one oversized first batch."""
    data = _batches(sizes)
    kept = whole_batches_within(data, limit, None if first else limit)
    assert data.startswith(kept)
    headers = list(codec.iter_batches(kept))
    assert sum(h.size for _, h in headers) == len(kept)
    if len(kept) > limit:
        assert first and len(headers) == 1
    first_size = codec.batch_size_at(data)
    if first and first_size > limit:
        assert len(kept) == first_size
    if len(kept) < len(data):
        assert len(kept) + codec.batch_size_at(data, len(kept)) > limit or (not kept and not first)


def test_producer_ids_increase_across_restarts(tmp_path):
    """Ids are unique and increasing, also after a restart (reserved by blocks)."""
    manager = ProducerIdManager(tmp_path, block_size=3)
    first = [manager.next_producer_id() for _ in range(5)]
    assert first == list(range(5))
    again = ProducerIdManager(tmp_path, block_size=3)
    assert again.next_producer_id() > first[-1]


def test_server_config_file(tmp_path):
    path = tmp_path / "logd.toml"
    path.write_text('data_dir = "/tmp/x"\nlisten = "0.0.0.0:7071"\nlog-level = "debug"\n'
                    'flush_policy = "always"\nretention_check_interval_ms = 100\n')
    config = load_server_config(path)
    assert config == {"data_dir": __import__("pathlib").Path("/tmp/x"), "listen": "0.0.0.0:7071",
                      "log_level": "debug", "flush_policy": "always", "retention_check_interval_ms": 100}


@pytest.mark.parametrize("text,key", [
    ('colour = "red"', "colour"), ('listen = "nohost"', "listen"), ("retention_check_interval_ms = -1", "retention"),
    ('flush_policy = "sometimes"', "flush_policy"), ("log_level = 3", "log_level"), ("data_dir = [", "TOML"),
])
def test_server_config_file_rejects(tmp_path, text, key):
    path = tmp_path / "logd.toml"
    path.write_text(text + "\n")
    with pytest.raises(ServerConfigError, match=key):
        load_server_config(path)


def test_batch_md_worked_example_matches_codec():
    """The hex example in proto/logd/v1/batch.md is exactly what the codec encodes."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "proto" / "logd" / "v1" / "batch.md").read_text()
    block = text.split("98 bytes in total:\n\n")[1].split("\n\n")[0]
    expected = codec.encode_batch([(1_700_000_000_000, b"k1", b"hello", [("trace", b"1")])], codec=codec.CODEC_NONE)
    assert bytes.fromhex("".join(block.split())) == expected
