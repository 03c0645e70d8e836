"""Requests of one unary method over one long-lived stream (``LogService.ProduceStream``,
``LogService.FetchStream``), answered in order.

A grpcio unary call costs about 0.42 ms here however small; a message on an open stream
about 0.3 ms, and the broker sets up no new call per request. The producer's sender
(its usual request is the only one in flight, always so with one partition) and the
consumer's fetcher each wait for an answer before sending the next request, so each
sends over a long-lived stream instead: requests and answers pair up in order. With
the consumer's fetches on a stream, end-to-end latency at 5,000 records/s fell by
0.15-0.3 ms at p50 and p99 (``scripts/latency.py``, paired runs), and the broker spent
about half the CPU (GIL held 16% of the time against 29%).

- Timeouts: ``next()`` on a stream cannot time out, so a watchdog thread cancels the call
  once the request in flight is older than ``request_timeout``; the caller then sees
  DEADLINE_EXCEEDED, as from a unary call. The watchdog sleeps a whole timeout at a time
  and is never woken per request (a thread handoff per request would cost what the
  stream saves); it cancels a request's call at most once, under the lock ``call`` takes
  to send, so it never cancels a newer request than the overdue one.
- Idle: a stream unused for ``IDLE_CLOSE_S`` is closed by the watchdog (the broker holds
  a worker thread per open stream and serves a bounded number); the next request opens
  a new one.
- Failures: any error ends the stream; the next request opens a new one. A stream that
  ends without an answer, or is cancelled by anything but the watchdog (a broker going
  away), reads as UNAVAILABLE, which the callers retry.
- Refusal: a broker that does not implement the stream (UNIMPLEMENTED) or serves no more
  of them (RESOURCE_EXHAUSTED saying so: ``_REFUSED_DETAILS``) refuses it before it saw
  the request. With a ``unary`` method given, the request then goes as a unary call, and
  so do the next ones for ``STREAM_RETRY_AFTER_S``; without, ``call`` raises
  :class:`StreamRefused`.

Thread safety: one thread calls :meth:`RequestStream.call` (the sender or fetcher
thread); ``close`` may come from any thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator

import grpc

from logd_sdk._transport import error_code_of

_END = object()  # ends the request iterator
_MIN_WATCH_S = 0.01  # the watchdog's shortest sleep (a tiny request timeout must not spin it)
#: A stream unused this long is closed: an idle client does not keep a broker worker.
IDLE_CLOSE_S = 60.0
#: After a broker refused a stream (it serves a bounded number), this long on unary
#: calls before trying a stream again.
STREAM_RETRY_AFTER_S = 60
#: In the details of the broker's refusal of a stream for want of slots
#: (``logd.server.log.STREAM_REFUSED``; every version's text has it).
_REFUSED_DETAILS = "serves no more"


class StreamRefused(Exception):
    """The broker will not serve the stream; the request was not handled."""


class _StreamError(grpc.RpcError):
    """A failure of the stream, shaped as a failed unary call for the callers' error mapping."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return ()


class RequestStream:
    """Sends requests over one stream, one at a time (see the module docstring).

    ``open_stream``: the stream-stream method (it is given the request iterator);
    ``unary``: the unary method for the same requests, used while streams are refused
    (called with ``timeout=request_timeout_s``); ``what`` names the stream in errors;
    ``log``: where a refusal is logged (the client's logger).
    """

    def __init__(self, open_stream: Callable[[Iterator[Any]], Iterator[Any]], request_timeout_s: float, *,
                 unary: Callable[..., Any] | None = None, what: str = "request",
                 log: logging.Logger = logging.getLogger("logd_sdk"), idle_close_s: float = IDLE_CLOSE_S) -> None:
        self._open_stream = open_stream
        self._log = log
        self._unary = unary
        self._what = what
        self._timeout_s = request_timeout_s
        self._idle_close_s = idle_close_s
        self._refused_until = 0.0  # monotonic time; before it, unary calls
        self._requests: queue.SimpleQueue | None = None
        self._call = None  # the open stream's response iterator
        self._sent_at = 0.0
        self._in_flight = False
        self._answered = False  # the open stream answered a request (so it was not refused)
        self._sequence = 0  # requests sent so far; the watchdog cancels one of them at most once
        self._cancelled_sequence = 0
        self._timed_out = False
        self._closed = False
        self._wakeup = threading.Condition()
        self._watchdog: threading.Thread | None = None

    def call(self, request: Any) -> Any:
        """The answer to ``request``: over the stream, or a unary call while streams are
        refused. Raises grpc.RpcError, or StreamRefused when there is no ``unary``."""
        if self._unary is not None and time.monotonic() < self._refused_until:
            return self._unary(request, timeout=self._timeout_s)
        try:
            return self._call_streamed(request)
        except StreamRefused as exc:
            if self._unary is None:
                raise
            self._log.info("%s stream refused (%s): unary calls for the next %d s", self._what, exc,
                           STREAM_RETRY_AFTER_S)
            self._refused_until = time.monotonic() + STREAM_RETRY_AFTER_S
            return self._unary(request, timeout=self._timeout_s)

    def _call_streamed(self, request: Any) -> Any:
        with self._wakeup:  # uncontended but for close() and the watchdog's rare checks
            if self._call is None:
                self._open_locked()
            call, requests, fresh = self._call, self._requests, not self._answered
            self._sequence += 1
            self._timed_out = False
            self._sent_at = time.monotonic()
            self._in_flight = True
        try:
            requests.put(request)
            response = next(call)
        except StopIteration:
            self._discard()
            raise _StreamError(grpc.StatusCode.UNAVAILABLE, f"the {self._what} stream ended") from None
        except grpc.RpcError as exc:
            self._discard()
            raise self._failure(exc, fresh) from None
        finally:
            with self._wakeup:
                self._in_flight = False
                cut = self._timed_out
        if cut:  # the watchdog cancelled the call in the instant after this answer came:
            self._discard()  # the next request opens a new stream, not the cancelled one
        self._answered = True
        return response

    def close(self) -> None:
        """End the stream and the watchdog."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._discard()

    def _open_locked(self) -> None:
        if self._closed:
            raise _StreamError(grpc.StatusCode.CANCELLED, f"the {self._what} stream is closed")
        self._requests = queue.SimpleQueue()
        self._call = self._open_stream(iter(self._requests.get, _END))
        self._answered = False
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name=f"logd-{self._what}-stream-watchdog", daemon=True)
            self._watchdog.start()

    def _discard(self) -> None:
        with self._wakeup:
            call, requests, self._call, self._requests = self._call, self._requests, None, None
        if requests is not None:
            requests.put(_END)
        if call is not None:
            call.cancel()

    def _failure(self, exc: grpc.RpcError, fresh: bool) -> grpc.RpcError | StreamRefused:
        status = exc.code()
        if self._timed_out:
            return _StreamError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no {self._what} answer within {self._timeout_s:.1f} s (request_timeout_ms)")
        if fresh and (status is grpc.StatusCode.UNIMPLEMENTED or (
                status is grpc.StatusCode.RESOURCE_EXHAUSTED and error_code_of(exc) is None
                and _REFUSED_DETAILS in (exc.details() or ""))):
            # Refused before the request was read. Any other RESOURCE_EXHAUSTED (gRPC's own
            # "too many calls" from a busy broker, a message over its size limit) is the
            # request's own outcome, as for a unary call.
            return StreamRefused(exc.details() or str(status))
        if status is grpc.StatusCode.CANCELLED:
            return _StreamError(grpc.StatusCode.UNAVAILABLE, f"the {self._what} stream was cancelled: {exc.details()}")
        return exc

    def _watch(self) -> None:
        with self._wakeup:
            while not self._closed:
                now = time.monotonic()
                wait_s = self._timeout_s
                idle_at = self._sent_at + self._idle_close_s  # unless another request goes first
                if self._in_flight:
                    overdue = now - self._sent_at - self._timeout_s
                    if overdue < 0:
                        wait_s = -overdue if idle_at <= now else min(-overdue, idle_at - now)
                    elif self._call is not None and self._sequence != self._cancelled_sequence:
                        # The request of this sequence number is overdue: under the lock,
                        # call() cannot have sent a newer one meanwhile.
                        self._cancelled_sequence = self._sequence
                        self._timed_out = True
                        self._call.cancel()
                elif self._call is not None:
                    if idle_at <= now:
                        self._discard()  # idle: give the broker its worker back; reopened when needed
                    else:
                        # Never longer than a timeout: a request sent meanwhile is not
                        # watched until the next wake (sleeping until idle_at left a hung
                        # request up to IDLE_CLOSE_S, a minute, instead of its timeout).
                        wait_s = min(self._timeout_s, idle_at - now)
                self._wakeup.wait(max(_MIN_WATCH_S, wait_s))
