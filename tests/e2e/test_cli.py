"""The `logd` CLI against a real broker: every command of issue 3, and its errors."""

import json

import mmh3
import pytest

from broker_process import BrokerProcess
from e2e_cli import ok, one_line_error, run
from logd_sdk import Admin, Producer, TopicPartition


def test_version(broker):
    assert ok(run(broker, "--version")).startswith("logd ")


def test_topic_commands(broker, topic):
    """create, list, describe (table and json), alter, delete."""
    assert topic in ok(run(broker, "topic", "create", topic, "--partitions", "3", "--config", "retention.ms=60000"))
    assert topic in ok(run(broker, "topic", "list")).split()
    assert topic in json.loads(ok(run(broker, "topic", "list", "--output", "json")))
    table = ok(run(broker, "topic", "describe", topic))
    assert "LOG_START_OFFSET" in table and "retention.ms=60000" in table
    described = json.loads(ok(run(broker, "topic", "describe", topic, "--output", "json")))
    assert described["name"] == topic and [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert set(described["partitions"][0]) == {"partition", "log_start_offset", "log_end_offset", "size_bytes"}
    ok(run(broker, "topic", "alter", topic, "--config", "cleanup.policy=compact"))
    config = json.loads(ok(run(broker, "topic", "describe", topic, "-o", "json")))["config"]
    assert config["cleanup.policy"] == "compact" and config["retention.ms"] == "60000"
    ok(run(broker, "topic", "delete", topic))
    assert topic not in ok(run(broker, "topic", "list")).split()


def test_produce_and_consume(broker, topic):
    """stdin lines with --key-separator and --header, --value; consume with --format and json."""
    ok(run(broker, "topic", "create", topic, "--partitions", "2"))
    lines = b"".join(b"user-%d:value-%d\n" % (i % 5, i) for i in range(20))
    metadata = [json.loads(line) for line in
                ok(run(broker, "produce", topic, "--key-separator", ":", "--header", "src=cli", "-o", "json",
                       stdin=lines)).splitlines()]
    assert len(metadata) == 20
    assert set(metadata[0]) == {"topic", "partition", "offset", "timestamp_ms"}
    for i, md in enumerate(metadata):
        assert md["partition"] == mmh3.hash(b"user-%d" % (i % 5), seed=0, signed=False) % 2
    ok(run(broker, "produce", topic, "--value", "solo", "--key", "k", "--partition", "1"))
    out = ok(run(broker, "consume", topic, "--from-beginning", "--max-messages", "21",
                 "--format", "{partition} {offset} {key} {value} {headers}"))
    rows = [line.split(" ") for line in out.splitlines()]
    assert len(rows) == 21
    solo = [r for r in rows if r[3] == "solo"]
    assert len(solo) == 1 and (solo[0][0], solo[0][2], solo[0][4]) == ("1", "k", "")
    assert all(r[4] == "src=cli" for r in rows if r[3] != "solo")
    records = [json.loads(line) for line in ok(run(broker, "consume", topic, "--partition", "1", "--offset", "0",
                                                   "--timeout-ms", "1000", "-o", "json")).splitlines()]
    assert records and all(r["partition"] == 1 for r in records)
    assert set(records[0]) == {"topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"}
    assert [r["offset"] for r in records] == list(range(len(records)))
    assert records[-1]["value"] == "solo" and records[0]["headers"] == [["src", "cli"]]
    padded = ok(run(broker, "consume", topic, "--partition", "1", "--offset", "0", "--max-messages", "1",
                    "--format", "{offset:>4d}|{value}"))
    assert padded.splitlines() == [f"{records[0]['offset']:>4d}|{records[0]['value']}"]


def test_consume_replays_from_offset_and_time(broker, topic):
    """--offset and --from-time (epoch ms and ISO 8601) start where asked; --max-messages and --timeout-ms end."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with Producer(broker.address) as producer:
        for i in range(10):
            producer.send(topic, value=b"%d" % i, timestamp_ms=1_700_000_000_000 + i * 1000)
    out = ok(run(broker, "consume", topic, "--offset", "7", "--max-messages", "3", "--timeout-ms", "5000"))
    assert out.split() == ["7", "8", "9"]
    out = ok(run(broker, "consume", topic, "--from-time", str(1_700_000_000_000 + 4500), "--max-messages", "2"))
    assert out.split() == ["5", "6"]
    out = ok(run(broker, "consume", topic, "--from-time", "2023-11-14T22:13:28Z", "--max-messages", "2", "--timeout-ms", "5000",
                 "--format", "{offset}"))
    assert out.split() == ["8", "9"]  # 2023-11-14T22:13:28Z is 1_700_000_008_000
    assert ok(run(broker, "consume", topic, "--timeout-ms", "300")) == ""  # latest: nothing new


def test_consume_from_an_offset_outside_the_log_says_so(broker, topic):
    """--offset below the log start or past the end: OffsetOutOfRangeError naming the range."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
        with Producer(broker.address) as producer:
            for i in range(10):
                producer.send(topic, value=b"%d" % i)
        admin.delete_records({TopicPartition(topic, 0): 4})
    for offset in ("0", "11"):
        one_line_error(run(broker, "consume", topic, "--offset", offset, "--timeout-ms", "5000"),
                       "OffsetOutOfRangeError", "[4, 10)")
    assert ok(run(broker, "consume", topic, "--offset", "4", "--max-messages", "6", "--timeout-ms", "5000")).split() \
        == [str(i) for i in range(4, 10)]


def test_bootstrap_flag_and_unreachable_broker(broker, topic):
    """--bootstrap overrides the env; an unreachable broker is one line and exit 1."""
    assert ok(run(broker, "topic", "list", "--bootstrap", broker.address, bootstrap=False)) is not None
    one_line_error(run(broker, "topic", "list", "--bootstrap", "127.0.0.1:1", bootstrap=False, timeout=60),
                   "BrokerUnavailableError", "127.0.0.1:1")
    one_line_error(run(broker, "topic", "list", "--bootstrap", "nonsense", bootstrap=False), "HOST:PORT")


@pytest.mark.parametrize("args,needle", [
    (["topic", "create", "bad name"], "InvalidTopicError"),
    (["topic", "create", "__internal"], "InvalidTopicError"),
    (["topic", "create", "{topic}", "--config", "no.such=1"], "InvalidConfigError"),
    (["topic", "create", "{topic}", "--config", "retention.ms"], "KEY=VALUE"),
    (["topic", "create", "{topic}", "--partitions", "-2"], "InvalidConfigError"),
    (["topic", "describe", "{topic}-missing"], "TopicNotFoundError"),
    (["topic", "delete", "{topic}-missing"], "TopicNotFoundError"),
    (["topic", "alter", "{topic}"], "--config"),
    (["produce", "{topic}-missing", "--value", "x"], "TopicNotFoundError"),
    (["consume", "{topic}-missing", "--timeout-ms", "100"], "TopicNotFoundError"),
    (["consume", "{topic}", "--offset", "-1"], "--offset"),
    (["consume", "{topic}", "--from-time", "yesterday"], "ISO 8601"),
    (["consume", "{topic}", "--from-beginning", "--offset", "3"], "choose one"),
    (["consume", "{topic}", "--format", "{nope}"], "--format"),
    (["consume", "{topic}", "--format", "{value.x}"], "--format"),
    (["consume", "{topic}", "--format", "{offset:s}"], "--format"),
    (["consume", "{topic}", "--partition", "9", "--timeout-ms", "100"], "partition 9"),
    (["produce", "{topic}", "--key-separator", ":"], "separator"),
    (["produce", "{topic}", "--header", "novalue", "--value", "x"], "KEY=VALUE"),
    (["topic", "create"], "Missing argument"),
    (["topic", "list", "--output", "xml"], "xml"),
    (["group", "reset-offsets", "g", "--topic", "{topic}"], "exactly one"),
])
def test_bad_input_is_one_line_and_non_zero(broker, topic, args, needle):
    """Every bad input gives one stderr line, no traceback, a non-zero exit; the broker lives on."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
        args = [a.replace("{topic}", topic) if a.startswith("{topic}") else a for a in args]
        one_line_error(run(broker, *args, stdin=b"no separator here\n"), needle)
        assert topic in admin.list_topics()


def test_group_commands_exist(broker, topic):
    """group list/describe/reset-offsets/delete run; until groups land they may refuse in one line."""
    ok(run(broker, "topic", "create", topic))
    for args in (["group", "list"], ["group", "describe", "g-" + topic],
                 ["group", "reset-offsets", "g-" + topic, "--topic", topic, "--to-earliest"],
                 ["group", "delete", "g-" + topic]):
        result = run(broker, *args)
        if result.returncode != 0:
            one_line_error(result)
    plan = run(broker, "group", "reset-offsets", "g-" + topic, "--topic", topic, "--to-latest", "-o", "json")
    assert json.loads(ok(plan)) == [{"topic": topic, "partition": 0, "new_offset": 0}]


def test_serve_refuses_a_bad_config_file_in_one_line(broker, tmp_path):
    """`logd serve --config` with an unknown key fails before starting, in one line."""
    config = tmp_path / "logd.toml"
    config.write_text('no_such_key = 1\n')
    one_line_error(run(broker, "serve", "--config", str(config), "--data-dir", str(tmp_path / "d")), "no_such_key")
    one_line_error(run(broker, "serve", "--log-level", "LOUD", "--data-dir", str(tmp_path / "d")), "LOUD")
    in_use = run(broker, "serve", "--listen", broker.address, "--data-dir", str(tmp_path / "d"))
    assert in_use.returncode != 0 and b"Traceback" not in in_use.stderr


def test_serve_merges_the_config_file_under_the_flags(tmp_path):
    """`logd serve --config` applies the file; explicit flags win over its keys."""
    config = tmp_path / "logd.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\nlog_level = "INFO"\n'
                      'retention_check_interval_ms = 1000\n')
    process = BrokerProcess(tmp_path / "from-flag", tmp_path / "broker.log", ["--config", str(config)])
    try:
        process.start()
        with Admin(process.address) as admin:
            admin.create_topic("configured")
    finally:
        assert process.stop() == 0
    assert (tmp_path / "from-flag").is_dir() and not (tmp_path / "from-file").exists()
