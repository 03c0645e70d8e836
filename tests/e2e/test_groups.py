"""Consumer groups end to end: a real broker, members as separate processes (group_member.py).

What the contract promises, checked from the outside: partitions are split disjointly and
cover the topic; a member that leaves or dies (SIGKILL, SIGSTOP past its session) loses
its partitions to the others; a zombie's commit is fenced; committed work is never
consumed twice and nothing is skipped; offsets survive a restart; the group admin
commands (CLI and Admin) see and change all this.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from e2e_cli import ok, one_line_error, run
from group_member import MemberProcess, wait_until
from logd_sdk import (
    Admin,
    Consumer,
    FencedMemberError,
    GroupNotEmptyError,
    IllegalStateError,
    InvalidGroupIdError,
    PartitionNotFoundError,
    Producer,
    TopicNotFoundError,
    TopicPartition,
)

SESSION_MS = 3000
SETTLE_S = 20.0  # bound on a rebalance with process start-up on a loaded 2-CPU machine


# -- helpers -----------------------------------------------------------------------------------

@pytest.fixture
def group(topic) -> str:
    return "g-" + topic


def produce(address: str, topic: str, count: int, start: int = 0) -> list[tuple[int, int]]:
    """Send ``count`` keyed records; returns their (partition, offset)."""
    with Producer(address, linger_ms=2) as producer:
        futures = [producer.send(topic, value=b"v%d" % i, key=b"k%d" % i) for i in range(start, start + count)]
        producer.flush()
        return [(m.partition, m.offset) for m in (f.result(timeout=30) for f in futures)]


def balanced(admin: Admin, group: str, members: list[MemberProcess], partitions: int):
    """The group's description when it is Stable with exactly ``members``, whose logged
    assignments agree with it, are disjoint, cover every partition and differ by at most one."""
    description = admin.describe_group(group)
    if description.state != "Stable" or len(description.members) != len(members):
        return None
    described = sorted(sorted(tp.partition for tp in m.assignment) for m in description.members)
    logged = sorted(sorted(m.assignment()) for m in members)
    if described != logged:
        return None
    flat = [p for parts in logged for p in parts]
    sizes = [len(parts) for parts in logged]
    if sorted(flat) != list(range(partitions)) or max(sizes) - min(sizes) > 1:
        return None
    return description


def start_members(broker, group: str, topic: str, tmp_path, names: str, **options) -> list[MemberProcess]:
    return [MemberProcess(broker.address, group, topic, tmp_path / f"{name}.log", **options).start()
            for name in names]


def kill_all(members: list[MemberProcess]) -> None:
    for member in members:
        member.kill()


# -- membership and assignment -------------------------------------------------------------------

def test_two_members_split_four_partitions_then_one_leaves(broker, topic, group, tmp_path):
    """Two processes own disjoint halves of four partitions; when one closes the other owns
    all four within the session timeout, and every record is consumed exactly once."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=4)
        produced = produce(broker.address, topic, 200)
        a, b = members = start_members(broker, group, topic, tmp_path, "ab", session_timeout_ms=SESSION_MS)
        try:
            wait_until(lambda: balanced(admin, group, members, 4), SETTLE_S, "two members to split four partitions")
            assert len(a.assignment()) == len(b.assignment()) == 2 and not a.assignment() & b.assignment()
            wait_until(lambda: len(a.consumed()) + len(b.consumed()) >= 200, SETTLE_S, "the first 200 records")
            left_at = time.monotonic()
            a.close()
            wait_until(lambda: balanced(admin, group, [b], 4), SESSION_MS / 1000, "b to own all four partitions")
            print(f"\nafter a member left, the other owned everything in {time.monotonic() - left_at:.2f} s")
            produced += produce(broker.address, topic, 100, start=200)
            wait_until(lambda: len(a.consumed()) + len(b.consumed()) >= 300, SETTLE_S, "the next 100 records")
        finally:
            kill_all(members)
    assert sorted(a.consumed() + b.consumed()) == sorted(produced)  # graceful changes: exactly once


def test_frozen_member_is_evicted_and_its_stale_commit_is_fenced(broker, topic, group, tmp_path):
    """A member stopped (SIGSTOP) past its session timeout is evicted and its partitions move;
    resumed, its commit of what it read before fails with FencedMemberError and it rejoins."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=4)
        produce(broker.address, topic, 200)
        a, b = members = start_members(broker, group, topic, tmp_path, "ab", session_timeout_ms=SESSION_MS)
        try:
            wait_until(lambda: balanced(admin, group, members, 4), SETTLE_S, "two members to split")
            held = a.assignment()
            produce(broker.address, topic, 200, start=200)
            wait_until(lambda: {p for p, _ in a.consumed()} >= held, SETTLE_S, "a to read its partitions")
            a.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            wait_until(lambda: balanced(admin, group, [b], 4), SESSION_MS / 1000 + 5, "a's eviction")
            evicted_after = time.monotonic() - stopped_at
            assert evicted_after >= SESSION_MS / 1000 - 1.0, f"evicted after only {evicted_after:.2f} s"
            # While b is stopped too it cannot release anything, so a cannot own a partition
            # again: its commit must be refused whatever its heartbeat thread did first.
            a.send("commit-last")
            b.signal(signal.SIGSTOP)
            a.signal(signal.SIGCONT)
            try:
                commit = wait_until(lambda: [e for e in a.events() if e["ev"] == "commit"], 5, "a's commit")[0]
            finally:
                b.signal(signal.SIGCONT)
            assert commit["ok"] is False and commit["error"] == "FencedMemberError", commit
            assert {p for p, _ in commit["offsets"]} >= held
            wait_until(lambda: balanced(admin, group, members, 4), SETTLE_S, "a to rejoin and get partitions")
            resumed = [e for e in a.events() if e["t"] > stopped_at]  # monotonic clocks are system-wide
            assert [e["tps"] for e in resumed if e["ev"] == "revoke"][:1] == [sorted(held)], "held lost at once"
            assert any(e["ev"] == "assign" and e["t"] > commit["t"] for e in resumed), "a rejoined"
        finally:
            for member in members:
                if member.process.poll() is None:
                    member.signal(signal.SIGCONT)
            kill_all(members)


def test_commit_of_current_positions_after_an_eviction_fails(broker, topic, group):
    """commit() without offsets, by a member evicted before it heard of the loss (its
    on_revoke not yet run), raises FencedMemberError rather than quietly committing
    nothing: the records it read will be read again by the new owner."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
        produce(broker.address, topic, 20)
        stalled = Consumer(broker.address, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                           session_timeout_ms=SESSION_MS, max_poll_records=3)
        other = Consumer(broker.address, group_id=group, auto_offset_reset="earliest", session_timeout_ms=SESSION_MS)
        try:
            stalled.subscribe([topic])
            read: list = []
            wait_until(lambda: read.extend(stalled.poll(timeout_ms=20)) or read, SETTLE_S, "the first records")
            other.subscribe([topic])
            def other_owns_both() -> bool:
                other.poll(timeout_ms=20)
                return len(other.assignment()) == 2

            # Holding the stalled member's lock freezes its heartbeat and fetch threads, as
            # a stopped process would, until the broker evicts it and `other` owns both.
            stalled._lock.acquire()
            try:
                wait_until(other_owns_both, SESSION_MS / 1000 + SETTLE_S, "the eviction")
            finally:
                stalled._lock.release()
            with pytest.raises(FencedMemberError, match="lost"):
                stalled.commit()
            stalled.commit()  # once told (here by the error; else by on_revoke), nothing is left to commit
        finally:
            stalled.close()
            other.close()


def test_eight_members_converge_on_sixteen_partitions(broker, topic, group, tmp_path):
    """Eight member processes started together converge to two partitions each, every
    partition owned exactly once, within a bounded time."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=16)
        members = start_members(broker, group, topic, tmp_path, "abcdefgh", session_timeout_ms=6000)
        try:
            wait_until(lambda: all(m.events() for m in members), SETTLE_S, "eight members to start")
            started = time.monotonic()
            description = wait_until(lambda: balanced(admin, group, members, 16), SETTLE_S, "convergence")
            print(f"\n8 members converged on 16 partitions {time.monotonic() - started:.2f} s after the last start")
            assert all(len(m.assignment) == 2 for m in description.members)
            closers = [threading.Thread(target=m.close) for m in members]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join(30)
            assert all(m.process.poll() == 0 for m in members)
            assert admin.describe_group(group).state == "Empty"
        finally:
            kill_all(members)


# -- nothing lost, nothing committed twice -----------------------------------------------------

class ContinuousProducer(threading.Thread):
    """Sends keyed records until stopped; ``acked`` holds their (partition, offset)."""

    def __init__(self, address: str, topic: str, rate_per_s: int = 400) -> None:
        super().__init__(daemon=True)
        self.address, self.topic, self.interval_s = address, topic, 1.0 / rate_per_s
        self.stopping = threading.Event()
        self.acked: list[tuple[int, int]] = []

    def run(self) -> None:
        with Producer(self.address, linger_ms=5) as producer:
            futures = []
            i = 0
            while not self.stopping.wait(self.interval_s):  # the pace of production, not a sync
                futures.append(producer.send(self.topic, value=b"v%d" % i, key=b"k%d" % i))
                i += 1
            producer.flush()
            self.acked = [(m.partition, m.offset) for m in (f.result(timeout=30) for f in futures)]


def partition_runs(members: list[MemberProcess], killed: set[MemberProcess]) -> dict[int, list[dict]]:
    """Per partition, each member's uninterrupted ownership ("run"): start time, the offsets
    it read, and whether it ended with on_revoke (graceful) or with the process killed."""
    runs: dict[int, list[dict]] = {}
    for member in members:
        open_runs: dict[int, dict] = {}
        for event in member.events():
            if event["ev"] == "assign":
                for p in event["tps"]:
                    open_runs[p] = {"t": event["t"], "offsets": [], "graceful": False, "member": member.log_path.stem}
                    runs.setdefault(p, []).append(open_runs[p])
            elif event["ev"] == "revoke":
                for p in event["tps"]:
                    open_runs.pop(p)["graceful"] = True
            elif event["ev"] == "records":
                for p, offset in event["recs"]:
                    open_runs[p]["offsets"].append(offset)  # KeyError: a record outside ownership
        assert not open_runs or member in killed, f"{member.log_path.stem} ended owning {sorted(open_runs)}"
    for partition_runs_ in runs.values():
        partition_runs_.sort(key=lambda r: r["t"])
    return runs


def test_group_changes_under_production_skip_nothing_and_repeat_only_uncommitted_work(
        broker, topic, group, tmp_path):
    """While members join, leave and die under continuous production, every record is
    consumed, a graceful hand-over repeats nothing, and after a SIGKILL only records past
    the last commit are consumed again (counted)."""
    partitions, session_ms = 6, 2000
    options = dict(session_timeout_ms=session_ms, auto_commit_interval_ms=200)
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=partitions)
        producer = ContinuousProducer(broker.address, topic)
        producer.start()
        a, b = start_members(broker, group, topic, tmp_path, "ab", **options)
        everyone = [a, b]
        try:
            wait_until(lambda: balanced(admin, group, [a, b], partitions), SETTLE_S, "a and b")
            (c,) = start_members(broker, group, topic, tmp_path, "c", **options)
            everyone.append(c)
            wait_until(lambda: balanced(admin, group, [a, b, c], partitions), SETTLE_S, "c to join")
            a.close()
            wait_until(lambda: balanced(admin, group, [b, c], partitions), SETTLE_S, "a to leave")
            committed_before_kill = {tp.partition: o.committed_offset
                                     for tp, o in admin.describe_group(group).offsets.items()}
            held_by_b = b.assignment()
            b.kill()
            wait_until(lambda: balanced(admin, group, [c], partitions), SETTLE_S, "b's eviction")
            (d,) = start_members(broker, group, topic, tmp_path, "d", **options)
            everyone.append(d)
            wait_until(lambda: balanced(admin, group, [c, d], partitions), SETTLE_S, "d to join")
            producer.stopping.set()
            producer.join(30)
            produced = set(producer.acked)
            wait_until(lambda: produced <= {r for m in everyone for r in m.consumed()}, SETTLE_S, "the backlog")
            c.close()
            d.close()
        finally:
            producer.stopping.set()
            kill_all(everyone)
    consumed = [r for m in everyone for r in m.consumed()]
    assert produced <= set(consumed), "skipped: " + str(sorted(produced - set(consumed))[:10])
    assert held_by_b, "b owned partitions when killed"
    duplicates = check_hand_overs(partition_runs(everyone, killed={b}), committed_before_kill)
    repeated = len(consumed) - len(set(consumed))
    assert repeated == duplicates
    print(f"\n{len(produced)} records, {len(consumed)} consumed, {repeated} duplicates "
          f"(all uncommitted work of the killed member)")


def check_hand_overs(runs_by_partition: dict[int, list[dict]], committed_before_kill: dict[int, int | None]) -> int:
    """Check each partition's successive runs: each reads a gap-free range; after a graceful
    hand-over the next run starts exactly where the last one stopped; after a kill it starts
    no earlier than the offset committed before the kill and no later than where the killed
    run stopped. Returns the number of records read again (all after kills)."""
    duplicates = 0
    for partition, runs in runs_by_partition.items():
        expected = 0  # auto_offset_reset=earliest and nothing committed at first
        clean = True  # the last run that read anything handed over gracefully
        for run_ in runs:
            offsets = run_["offsets"]
            if not offsets:
                continue
            first = offsets[0]
            assert offsets == list(range(first, first + len(offsets))), f"gap inside a run of {partition}"
            if clean:
                assert first == expected, f"partition {partition}: {run_['member']} started at {first}, not {expected}"
            else:
                assert (committed_before_kill.get(partition) or 0) <= first <= expected, (partition, first, expected)
                duplicates += expected - first
            expected = offsets[-1] + 1
            clean = run_["graceful"]
    return duplicates


# -- offsets ----------------------------------------------------------------------------------

def test_committed_offsets_survive_a_broker_restart(broker, topic, group, tmp_path):
    """Committed offsets are the same after a restart, and a member alive through it goes
    on from them: new records are consumed, old ones are not consumed again."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
        produced = produce(broker.address, topic, 100)
        (member,) = start_members(broker, group, topic, tmp_path, "m", session_timeout_ms=SESSION_MS)
        try:
            def all_committed():
                offsets = admin.describe_group(group).offsets
                return len(offsets) == 2 and all(o.lag == 0 for o in offsets.values()) and offsets
            before = wait_until(all_committed, SETTLE_S, "everything to be committed")
            broker.restart()
            assert admin.describe_group(group).offsets == before
            produced += produce(broker.address, topic, 50, start=100)
            wait_until(lambda: len(member.consumed()) >= 150, SETTLE_S + SESSION_MS / 1000, "the new records")
            member.close()
        finally:
            member.kill()
        assert sorted(member.consumed()) == sorted(produced)
        with Consumer(broker.address, group_id=group, enable_auto_commit=False) as consumer:
            assert {p: consumer.committed(TopicPartition(topic, p)) for p in (0, 1)} == {
                tp.partition: o.log_end_offset for tp, o in admin.describe_group(group).offsets.items()}


def test_reset_offsets_is_refused_while_live_and_rewinds_after(broker, topic, group, tmp_path):
    """reset-offsets is refused (CLI and Admin) while the group has a live member; then a
    dry run changes nothing, --execute rewinds, and the next member reads from offset 0."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
        produced = produce(broker.address, topic, 40)
        (member,) = start_members(broker, group, topic, tmp_path, "m", session_timeout_ms=SESSION_MS)
        try:
            wait_until(lambda: len(member.consumed()) >= 40, SETTLE_S, "the records")
            refused = run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
            one_line_error(refused, "GroupNotEmptyError")
            one_line_error(run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest"),
                           "GroupNotEmptyError")  # as Kafka's tool: no plan for an active group
            with pytest.raises(GroupNotEmptyError):
                admin.reset_offsets(group, {TopicPartition(topic, 0): 0})
            member.close()
        finally:
            member.kill()
        with pytest.raises(TopicNotFoundError):
            admin.reset_offsets(group, {TopicPartition(f"{topic}-missing", 0): 0})
        with pytest.raises(PartitionNotFoundError):
            admin.reset_offsets(group, {TopicPartition(topic, 2): 0})
        committed = {tp: o.committed_offset for tp, o in admin.describe_group(group).offsets.items()}
        assert sum(committed.values()) == 40
        plan = json.loads(ok(run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest",
                                 "-o", "json")))
        assert plan == [{"topic": topic, "partition": p, "new_offset": 0} for p in (0, 1)]
        assert {tp: o.committed_offset for tp, o in admin.describe_group(group).offsets.items()} == committed
        ok(run(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute"))
        assert all(o.committed_offset == 0 for o in admin.describe_group(group).offsets.values())
        with Consumer(broker.address, group_id=group, auto_offset_reset="latest", session_timeout_ms=SESSION_MS) as c:
            c.subscribe([topic])
            again: list = []
            wait_until(lambda: again.extend(c.poll(timeout_ms=50)) or len(again) >= 40, SETTLE_S, "the replay")
        assert sorted((r.partition, r.offset) for r in again) == sorted(produced)


def test_unsubscribe_completes_when_on_revoke_raises(broker, topic, group):
    """on_revoke's exception reaches the caller of unsubscribe, and the consumer is left
    unsubscribed all the same (it once stayed half-subscribed: assign() refused)."""

    def on_revoke(partitions):
        raise RuntimeError("the application's on_revoke failed")

    with Admin(broker.address) as admin, Consumer(broker.address, group_id=group,
                                                  session_timeout_ms=SESSION_MS) as consumer:
        admin.create_topic(topic, partitions=1)
        consumer.subscribe([topic], on_revoke=on_revoke)
        wait_until(lambda: consumer.poll(timeout_ms=100) or consumer.assignment(), SETTLE_S, "the assignment")
        with pytest.raises(RuntimeError, match="on_revoke failed"):
            consumer.unsubscribe()
        assert consumer.subscription() == set() and consumer.assignment() == set()
        consumer.assign([TopicPartition(topic, 0)])  # not "already uses subscribe()"
        assert consumer.assignment() == {TopicPartition(topic, 0)}


def test_a_commit_whose_epoch_two_assignment_changes_made_stale_is_sent_again(broker, topic, group):
    """The coordinator accepts the current and the previous epoch: a commit still on its
    way when two more members joined used to fail as fenced, although the member kept
    the partition. It is sent once more with the current epoch."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=6)
    members = [Consumer(broker.address, group_id=group, session_timeout_ms=SESSION_MS, enable_auto_commit=False)
               for _ in range(3)]
    first, others = members[0], members[1:]
    stop = threading.Event()
    try:
        first.subscribe([topic])
        wait_until(lambda: first.poll(timeout_ms=50) or len(first.assignment()) == 6, SETTLE_S, "all six partitions")
        membership = first._membership
        epoch_at_send = membership.epoch
        on_its_way, release = threading.Event(), threading.Event()
        call = first._transport.call

        def held_commit(method, request, **options):  # a slow wire for the first commit only
            if method is first._transport.groups.CommitOffsets and not on_its_way.is_set():
                on_its_way.set()
                release.wait(SETTLE_S)
            return call(method, request, **options)

        first._transport.call = held_commit
        outcome = []
        committer = threading.Thread(target=lambda: outcome.append(
            first.commit({TopicPartition(topic, 0): 1}) or "committed"))
        committer.start()
        assert on_its_way.wait(SETTLE_S)

        def keep_polling(consumer):
            consumer.subscribe([topic])
            while not stop.is_set():
                consumer.poll(timeout_ms=50)

        for joined, consumer in enumerate(others, start=1):  # one after the other: two new epochs
            threading.Thread(target=keep_polling, args=(consumer,), daemon=True).start()
            wait_until(lambda: membership.epoch >= epoch_at_send + joined, SETTLE_S, f"assignment change {joined}")
        assert TopicPartition(topic, 0) in first.assignment()
        release.set()
        committer.join(SETTLE_S)
        assert outcome == ["committed"]
        assert first.committed(TopicPartition(topic, 0)) == 1
    finally:
        release.set()
        stop.set()
        for consumer in members:
            consumer.close()


def test_a_topic_created_again_is_read_from_its_start_not_from_the_old_commits(broker, topic, group):
    """A deleted topic's committed offsets used to survive it: a group then skipped the
    first records of a topic created again under the name (here 0-49), silently."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=1)
        with Consumer(broker.address, group_id=group, enable_auto_commit=False) as consumer:
            consumer.assign([TopicPartition(topic, 0)])
            consumer.commit({TopicPartition(topic, 0): 50})
        admin.delete_topic(topic)
        admin.create_topic(topic, partitions=1)
        assert admin.describe_group(group).offsets == {}
    produce(broker.address, topic, 60)
    with Consumer(broker.address, group_id=group, auto_offset_reset="earliest") as consumer:
        consumer.subscribe([topic])
        got = []
        wait_until(lambda: got.extend(consumer.poll(timeout_ms=100)) or len(got) >= 60, SETTLE_S, "60 records")
    assert [record.offset for record in got] == list(range(60))


def test_describe_shows_an_unknown_lag_before_the_first_commit(broker, topic, group):
    """A member that has committed nothing: committed None and lag -1 in the SDK and the
    JSON, '-' for both in the table (as Kafka's tool), never a lag of -1 read as a number."""
    with Admin(broker.address) as admin, Consumer(broker.address, group_id=group, enable_auto_commit=False,
                                                  session_timeout_ms=SESSION_MS) as consumer:
        admin.create_topic(topic, partitions=1)
        produce(broker.address, topic, 5)
        consumer.subscribe([topic])
        wait_until(lambda: consumer.poll(timeout_ms=100) or consumer.assignment(), SETTLE_S, "the assignment")
        (offsets,) = wait_until(lambda: list(admin.describe_group(group).offsets.values()), SETTLE_S,
                                "the partition in the description")
        assert (offsets.committed_offset, offsets.log_end_offset, offsets.lag) == (None, 5, -1)
        (row,) = json.loads(ok(run(broker, "group", "describe", group, "-o", "json")))["offsets"]
        assert (row["committed_offset"], row["lag"]) == (None, -1)
        table = ok(run(broker, "group", "describe", group)).splitlines()
        header = table[1].split()
        (line,) = [cells for cells in (row.split() for row in table[2:]) if cells[0] == topic]
        assert line[header.index("COMMITTED_OFFSET")] == "-" and line[header.index("LAG")] == "-"
        assert line[header.index("LOG_END_OFFSET")] == "5"


def test_group_list_describe_delete_via_cli_and_admin(broker, topic, group, tmp_path):
    """list/describe show a live group's member, assignment and lag; delete is refused while
    it is live (CLI and Admin) and afterwards removes the group and its offsets."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=3)
        produce(broker.address, topic, 30)
        (member,) = start_members(broker, group, topic, tmp_path, "m", session_timeout_ms=SESSION_MS)
        try:
            wait_until(lambda: balanced(admin, group, [member], 3), SETTLE_S, "the member to own everything")
            wait_until(lambda: sum(o.committed_offset or 0 for o in admin.describe_group(group).offsets.values()) == 30,
                       SETTLE_S, "the commits")
            assert group in admin.list_groups()
            assert group in json.loads(ok(run(broker, "group", "list", "-o", "json")))
            described = json.loads(ok(run(broker, "group", "describe", group, "-o", "json")))
            assert described["state"] == "Stable" and len(described["members"]) == 1
            assert sorted(tp["partition"] for tp in described["members"][0]["assignment"]) == [0, 1, 2]
            assert sorted(o["partition"] for o in described["offsets"]) == [0, 1, 2]
            assert all(o["lag"] == 0 and o["committed_offset"] == o["log_end_offset"] for o in described["offsets"])
            table = ok(run(broker, "group", "describe", group))
            assert "Stable" in table and described["members"][0]["member_id"] in table
            one_line_error(run(broker, "group", "delete", group), "GroupNotEmptyError")
            with pytest.raises(GroupNotEmptyError):
                admin.delete_group(group)
            member.close()
        finally:
            member.kill()
        assert admin.describe_group(group).state == "Empty"
        ok(run(broker, "group", "delete", group))
        assert group not in admin.list_groups()
        assert admin.describe_group(group).state == "Dead"
        with Consumer(broker.address, group_id=group) as consumer:
            assert consumer.committed(TopicPartition(topic, 0)) is None


# -- the SDK's callbacks, static membership, the CLI consumer -------------------------------------

def test_callbacks_get_the_moved_partitions_and_poll_stops_returning_them(broker, topic, group):
    """on_revoke gets exactly the partitions that move to a new member, after their positions
    were committed; poll never returns their records afterwards; close revokes the rest."""
    calls: list[tuple[str, str, list[int]]] = []
    committed_at_revoke: dict[int, tuple[int, int | None]] = {}
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=4)
        produce(broker.address, topic, 100)
    first = Consumer(broker.address, group_id=group, auto_offset_reset="earliest", session_timeout_ms=SESSION_MS)
    second = Consumer(broker.address, group_id=group, auto_offset_reset="earliest", session_timeout_ms=SESSION_MS)

    def revoked_from_first(tps):
        calls.append(("first", "revoke", sorted(tp.partition for tp in tps)))
        for tp in tps:
            committed_at_revoke[tp.partition] = (first.position(tp), first.committed(tp))

    try:
        first.subscribe([topic], on_assign=lambda tps: calls.append(("first", "assign", sorted(t.partition for t in tps))),
                        on_revoke=revoked_from_first)
        got_first: list = []
        wait_until(lambda: got_first.extend(first.poll(timeout_ms=20)) or len(got_first) >= 100, SETTLE_S, "100")
        assert calls == [("first", "assign", [0, 1, 2, 3])]
        second.subscribe([topic], on_assign=lambda tps: calls.append(("second", "assign", sorted(t.partition for t in tps))),
                         on_revoke=lambda tps: calls.append(("second", "revoke", sorted(t.partition for t in tps))))
        got_second: list = []

        def split():
            got_first.extend(first.poll(timeout_ms=10))
            got_second.extend(second.poll(timeout_ms=10))
            return len(first.assignment()) == len(second.assignment()) == 2
        wait_until(split, SETTLE_S, "the split")
        moved = sorted(tp.partition for tp in second.assignment())
        assert calls[1:] == [("first", "revoke", moved), ("second", "assign", moved)]
        assert all(position == committed for position, committed in committed_at_revoke.values())
        revoked_at = len(got_first)
        produce(broker.address, topic, 100, start=100)
        wait_until(lambda: split() and len(got_first) + len(got_second) >= 200, SETTLE_S, "100 more")
        assert {r.partition for r in got_first[revoked_at:]} <= {tp.partition for tp in first.assignment()}
        assert {r.partition for r in got_second} == set(moved)
        kept = sorted(tp.partition for tp in first.assignment())
        first.close()
        assert calls[-1] == ("first", "revoke", kept)
        wait_until(lambda: got_second.extend(second.poll(timeout_ms=10)) or calls[-1][0] == "second", SETTLE_S,
                   "the second member's on_assign")
        assert calls[-1] == ("second", "assign", kept) and len(second.assignment()) == 4
        keys = [(r.partition, r.offset) for r in got_first + got_second]
        assert len(keys) == len(set(keys)) == 200
    finally:
        first.close()
        second.close()


def test_static_member_restart_within_the_session_keeps_its_partitions(broker, topic, group, tmp_path):
    """A static member (group_instance_id) that closes and restarts within its session timeout
    gets the same partitions back, and the other member's assignment never changes."""
    session_ms = 15000  # room for a process restart on a loaded 2-core machine
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=4)
        static = MemberProcess(broker.address, group, topic, tmp_path / "static-1.log", session_timeout_ms=session_ms,
                               instance_id="static-a").start()
        dynamic = MemberProcess(broker.address, group, topic, tmp_path / "dynamic.log",
                                session_timeout_ms=session_ms).start()
        restarted = MemberProcess(broker.address, group, topic, tmp_path / "static-2.log",
                                  session_timeout_ms=session_ms, instance_id="static-a")
        try:
            wait_until(lambda: balanced(admin, group, [static, dynamic], 4), SETTLE_S, "the split")
            kept, others = static.assignment(), dynamic.assignment()
            settled = len(dynamic.events())
            closed_at = time.monotonic()
            static.close()
            absent = admin.describe_group(group)
            assert [sorted(tp.partition for tp in m.assignment) for m in absent.members if m.group_instance_id] \
                == [sorted(kept)]
            restarted.start()
            wait_until(lambda: restarted.assignment() == kept, session_ms / 1000, "the same partitions back")
            assert time.monotonic() - closed_at < session_ms / 1000
            wait_until(lambda: balanced(admin, group, [restarted, dynamic], 4), SETTLE_S, "stable again")
            assert dynamic.assignment() == others
            assert not [e for e in dynamic.events()[settled:] if e["ev"] in ("assign", "revoke")], "others moved"
            restarted.close()
            dynamic.close()
        finally:
            kill_all([static, dynamic, restarted])


def test_cli_consume_with_a_group_resumes_where_it_stopped(broker, topic, group):
    """`logd consume --group` reads through the group and commits on exit; the next run
    continues after what the first printed."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
    produce(broker.address, topic, 20)
    first = ok(run(broker, "consume", topic, "--group", group, "--from-beginning", "--max-messages", "12",
                   "--format", "{partition}:{offset}"))
    second = ok(run(broker, "consume", topic, "--group", group, "--from-beginning", "--timeout-ms", "1500",
                    "--format", "{partition}:{offset}"))
    seen = first.split() + second.split()
    assert len(first.split()) == 12 and sorted(seen) == sorted(set(seen)) and len(seen) == 20
    one_line_error(run(broker, "consume", topic, "--group", group, "--offset", "3", "--timeout-ms", "100"),
                   "--partition")


def test_subscribe_misuse_fails_fast(broker, topic):
    """subscribe needs a group_id, a list of names, and no earlier assign(); poll of a member
    without partitions waits instead of raising."""
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    with Consumer(broker.address) as consumer:
        with pytest.raises(InvalidGroupIdError):
            consumer.subscribe([topic])
    with Consumer(broker.address, group_id="g-" + topic) as consumer:
        with pytest.raises(TypeError):
            consumer.subscribe(topic)
        consumer.assign([TopicPartition(topic, 0)])
        with pytest.raises(IllegalStateError):
            consumer.subscribe([topic])
        consumer.unsubscribe()
        consumer.subscribe([topic + "-missing"])  # no partitions: poll waits
        assert consumer.poll(timeout_ms=100) == []
        assert consumer.subscription() == {topic + "-missing"}
        with pytest.raises(IllegalStateError):
            consumer.assign([TopicPartition(topic, 0)])
