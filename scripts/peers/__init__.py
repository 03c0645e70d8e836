"""The systems ``scripts/compare.py`` measures side by side, one small module each.

    workload.py          the records (same bytes for every system, fixed seed)
    stats.py             percentiles, rates, formatting
    harness.py           progress lines, fixed-rate pacing, the latency probe
    procs.py             server child processes: free ports, readiness, stop by PID
    base.py              the Target interface and the driver that measures one system
    report.py            the table, the fairness notes, the chart, the JSON
    logd_target.py       logd (logd_sdk against a ``logd serve`` child)
    redis_streams.py     Redis Streams, AOF everysec and AOF always
    rabbitmq_streams.py  RabbitMQ Streams (rstream)
    nats_jetstream.py    NATS JetStream (nats-py)

Peer clients are imported lazily, so ``workload``, ``stats`` and ``harness`` work (and
are tested) without any of them installed.
"""

from __future__ import annotations

SYSTEMS = ("logd", "redis-everysec", "redis-always", "rabbitmq-streams", "nats-jetstream")


def make_target(name: str):
    """A fresh :class:`peers.base.Target` for a name in SYSTEMS."""
    if name == "logd":
        from peers.logd_target import Logd
        return Logd()
    if name in ("redis-everysec", "redis-always"):
        from peers.redis_streams import RedisStreams
        return RedisStreams(name.split("-", 1)[1])
    if name == "rabbitmq-streams":
        from peers.rabbitmq_streams import RabbitMQStreams
        return RabbitMQStreams()
    if name == "nats-jetstream":
        from peers.nats_jetstream import NatsJetStream
        return NatsJetStream()
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
