"""Per-record futures sharing one batch result."""

import threading

import pytest

from logd_sdk import LogdTimeoutError, RecordMetadata, TopicNotFoundError
from logd_sdk._future import BatchResult, FutureRecordMetadata


def test_records_resolve_with_their_own_offsets():
    """Each handle of a batch gets base_offset + its index and its own timestamp."""
    batch = BatchResult("t", 2)
    handles = [FutureRecordMetadata(batch, i, 1000 + i) for i in range(3)]
    assert not any(h.done() for h in handles)
    with pytest.raises(LogdTimeoutError):
        handles[0].result(timeout=0.01)
    seen = []
    handles[1].add_done_callback(lambda f: seen.append(f.result()))
    threading.Thread(target=batch.complete, args=(40, None)).start()
    assert handles[2].result(timeout=5) == RecordMetadata("t", 2, 42, 1002)
    assert handles[0].exception(timeout=5) is None
    assert seen == [RecordMetadata("t", 2, 41, 1001)]
    late = []
    handles[0].add_done_callback(late.append)  # already done: runs at once
    assert late == [handles[0]]


def test_failed_batch_raises_the_typed_error_for_every_record():
    """A failed batch fails each of its records with the same typed error."""
    batch = BatchResult("t", 0)
    handles = [FutureRecordMetadata(batch, i, 0) for i in range(2)]
    batch.complete(-1, TopicNotFoundError("topic 't' does not exist"))
    batch.complete(5, None)  # a second completion is ignored
    for handle in handles:
        with pytest.raises(TopicNotFoundError):
            handle.result()
        assert isinstance(handle.exception(), TopicNotFoundError)


def test_a_raising_callback_does_not_break_completion():
    """A user callback that raises is logged; other callbacks still run."""
    batch = BatchResult("t", 0)
    handle = FutureRecordMetadata(batch, 0, 0)
    ran = []
    handle.add_done_callback(lambda f: 1 / 0)
    handle.add_done_callback(lambda f: ran.append(True))
    batch.complete(0, None)
    assert ran == [True]


def test_threads_waiting_before_the_completion_all_wake():
    """Waiters that arrive before the batch resolves (the event is made by the first of
    them) all return once it does; a batch nobody waited on never makes one."""
    batch = BatchResult("t", 0)
    handles = [FutureRecordMetadata(batch, i, 0) for i in range(4)]
    results = []
    waiting = threading.Barrier(len(handles) + 1)

    def wait(handle):
        waiting.wait(timeout=5)
        results.append(handle.result(timeout=5).offset)

    threads = [threading.Thread(target=wait, args=(handle,)) for handle in handles]
    for thread in threads:
        thread.start()
    waiting.wait(timeout=5)
    assert not batch.wait(0)  # pending: this wait makes the event the late waiters block on
    batch.complete(10, None)
    for thread in threads:
        thread.join(timeout=5)
    assert sorted(results) == [10, 11, 12, 13]
    unwatched = BatchResult("t", 0)
    unwatched.complete(0, None)
    assert unwatched._event is None and FutureRecordMetadata(unwatched, 1, 0).result(timeout=0).offset == 1
