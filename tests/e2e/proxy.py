"""A loopback TCP proxy between a client and the broker that can lose the broker's replies.

``TcpProxy(upstream).start()`` listens on ``127.0.0.1:<free port>`` (``address``); each
connection accepted gets its own connection to ``upstream`` and two pump threads, one per
direction.

- ``drop_replies()``: from now on every byte from the broker to the client is read and
  thrown away, on the open connections and on new ones, while the client's bytes still
  reach the broker: the broker handles each request (appends) but its answer is lost.
  The client's call then hits its deadline.
- ``sever()``: stop dropping and close every open connection (the client sees the
  connection go: gRPC UNAVAILABLE); new connections work normally. A connection that
  dropped bytes must not be reused anyway: HTTP/2 header compression keeps state on both
  ends, so after a lost frame the rest of the stream is garbage to the client.
- ``calls_started``: gRPC calls the client began (HTTP/2 HEADERS frames opening a new
  stream, client to broker), so a test can wait until a retry went out.

When the broker is down, accepted connections are closed at once (the client sees
UNAVAILABLE and retries with backoff).

Thread-safety: the public methods may be called from any thread; ``_lock`` guards the
connection list, the mode and the counter.
"""

from __future__ import annotations

import socket
import threading
import time

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9
_HEADERS = 0x1
_CHUNK = 65536


class _CallCounter:
    """Parses the client's HTTP/2 byte stream just enough to count new streams."""

    def __init__(self, on_call) -> None:
        self._buffer = b""
        self._preface_seen = False
        self._highest_stream = 0
        self._on_call = on_call

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self._preface_seen:
            if len(self._buffer) < len(_PREFACE):
                return
            self._preface_seen = True
            self._buffer = self._buffer[len(_PREFACE):]
        while len(self._buffer) >= _FRAME_HEADER:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < _FRAME_HEADER + length:
                return
            frame_type = self._buffer[3]
            stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            if frame_type == _HEADERS and stream > self._highest_stream:
                self._highest_stream = stream
                self._on_call()
            self._buffer = self._buffer[_FRAME_HEADER + length:]


class TcpProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._dropping = False
        self._calls_started = 0
        self._stopped = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self) -> "TcpProxy":
        self._acceptor.start()
        return self

    # -- control ------------------------------------------------------------------------------

    def drop_replies(self) -> None:
        with self._lock:
            self._dropping = True

    def sever(self) -> None:
        with self._lock:
            self._dropping = False
            connections, self._connections = self._connections, []
        for pair in connections:
            _close_pair(pair)

    @property
    def calls_started(self) -> int:
        with self._lock:
            return self._calls_started

    def wait_for_calls(self, count: int, timeout_s: float) -> None:
        """Block until the client has started ``count`` calls in all (poll with a deadline)."""
        deadline = time.monotonic() + timeout_s
        while self.calls_started < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client started {self.calls_started} calls, not {count}, in {timeout_s} s")
            time.sleep(0.01)  # polling interval

    def stop(self) -> None:
        self._stopped = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        except OSError:
            pass
        self._listener.close()
        self.sever()
        self._acceptor.join(5)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- pumping ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the broker is down
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self._lock:
                self._connections.append(pair)
            counter = _CallCounter(self._count_call)
            threading.Thread(target=self._pump, args=(client, upstream, pair, counter), daemon=True,
                             name="proxy-to-broker").start()
            threading.Thread(target=self._pump, args=(upstream, client, pair, None), daemon=True,
                             name="proxy-to-client").start()

    def _count_call(self) -> None:
        with self._lock:
            self._calls_started += 1

    def _pump(self, source: socket.socket, target: socket.socket, pair, counter: _CallCounter | None) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                if counter is not None:
                    counter.feed(data)
                elif self._dropping:
                    continue  # a reply lost on its way to the client
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                if pair in self._connections:
                    self._connections.remove(pair)
            _close_pair(pair)


def _close_pair(pair: tuple[socket.socket, socket.socket]) -> None:
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
