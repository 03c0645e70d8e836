"""When a producing thread that filled a batch sends it itself and when it leaves it to
the sender thread (``Sender.send_ready_now``)."""

from logd_sdk import codec
from logd_sdk._accumulator import RecordAccumulator
from logd_sdk._sender import HAND_OVER_WITHIN_S, Sender
from logd_sdk._transport import Transport


def make_sender() -> tuple[Sender, Transport]:
    accumulator = RecordAccumulator(batch_size=1000, linger_ms=5, buffer_memory=1 << 20, max_block_ms=50,
                                    delivery_timeout_ms=60000)
    transport = Transport("127.0.0.1:1")  # never called here
    sender = Sender(accumulator, transport, acks=-1, codec_id=codec.CODEC_NONE, max_in_flight=5,
                    max_request_size=1 << 20, request_timeout_ms=30000, retry_backoff_ms=100,
                    retry_backoff_max_ms=1000, enable_idempotence=False, on_metadata_error=lambda topic: None)
    return sender, transport


def test_a_full_batch_waits_for_the_answer_unless_that_is_slow():
    """Nothing in flight: the producing thread sends. A request in flight: the batch is
    left for the sender thread to take with the next request, unless the sender thread's
    blocking call has taken longer than HAND_OVER_WITHIN_S (a slow request must not hold
    back the other partitions' batches)."""
    sender, transport = make_sender()
    try:
        now = 1000.0
        with sender._acc.lock:
            assert not sender._leave_to_sender_thread_locked(now)
            sender._in_flight = 1
            assert sender._leave_to_sender_thread_locked(now)  # a future in flight: the sender thread is free
            sender._blocking_since = now - HAND_OVER_WITHIN_S / 2
            assert sender._leave_to_sender_thread_locked(now)
            sender._blocking_since = now - 2 * HAND_OVER_WITHIN_S
            assert not sender._leave_to_sender_thread_locked(now)
    finally:
        transport.channel.close()
