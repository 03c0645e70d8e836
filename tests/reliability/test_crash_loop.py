"""Crash loop: SIGKILL the broker under acknowledged load, restart, check the history."""

from __future__ import annotations

import pytest

from .crashloop import CrashLoopConfig, run_crash_loop

#: The SDK's producer is idempotent by default and the broker answers a retried batch
#: with its original offsets, so a retry after a kill must not write a record twice.
#: (Set True to run against a broker without producer idempotence: duplicates are then
#: reported but tolerated.)
TOLERATE_DUPLICATES = False


@pytest.mark.timeout(110)
@pytest.mark.parametrize("flush_policy", ["group", "always"])
def test_crash_loop_keeps_every_acknowledged_record(tmp_path, seed, profile, flush_policy):
    """Under several acks=all producers and a polling consumer, SIGKILLs of the broker at
    random moments (some during recovery) lose no acknowledged record, reuse no offset,
    leave no gap, serve no garbage and keep each producer's order."""
    # "always" shares every code path but the fsync per append with "group": fewer kills.
    iterations = profile.iterations if flush_policy == "group" else max(1, profile.iterations // 2)
    report = run_crash_loop(CrashLoopConfig(tmp_path, seed, iterations=iterations, flush_policy=flush_policy,
                                            tolerate_duplicates=TOLERATE_DUPLICATES))
    print(report.summary())
    assert report.result.valid, report.summary()
    stats = report.result.stats
    # The run must have exercised something: acknowledged records on every side of kills.
    assert stats["acked"] > 100 and stats["polled"] > 0, report.summary()
