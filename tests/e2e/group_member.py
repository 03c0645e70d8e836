"""A consumer-group member as a separate process, and the test's handle on it.

Run as a script, it subscribes one ``Consumer`` to a topic and logs what happens::

    python group_member.py BOOTSTRAP GROUP TOPIC LOG [--session-timeout-ms N]
        [--instance-id ID] [--auto-commit-interval-ms N] [--max-poll-records N]

LOG gets one JSON object per line, flushed per line (so the log of a SIGKILLed member
is complete up to its last poll); ``t`` is ``time.monotonic()``, which is system-wide
on Linux, so events of different members can be ordered:

    {"ev": "start", "t", "pid"}
    {"ev": "assign" | "revoke", "t", "tps": [partition, ...]}   the callbacks
    {"ev": "records", "t", "recs": [[partition, offset], ...]}  each non-empty poll
    {"ev": "commit", "t", "offsets": [[partition, offset], ...], "ok", "error"}
    {"ev": "error", "t", "error", "message"}                     poll raised
    {"ev": "closed", "t"}

Commands on stdin, one per line: ``close`` (close the consumer, which commits, calls
on_revoke and leaves, then exit 0) and ``commit-last`` (commit explicitly the last
consumed offset + 1 of every partition this process ever read, as a zombie would).

:class:`MemberProcess` starts one and reads its log; it signals the process by PID only.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

POLL_TIMEOUT_MS = 50
WAIT_STEP_S = 0.02


def wait_until(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(WAIT_STEP_S)  # polling interval, bounded by the deadline above


class MemberProcess:
    """The test's handle on one member process (see the module docstring)."""

    def __init__(self, bootstrap: str, group: str, topic: str, log_path: Path, *, session_timeout_ms: int = 3000,
                 instance_id: str | None = None, auto_commit_interval_ms: int = 200,
                 max_poll_records: int = 50) -> None:
        self.log_path = Path(log_path)
        self.args = [sys.executable, os.path.abspath(__file__), bootstrap, group, topic, str(self.log_path),
                     "--session-timeout-ms", str(session_timeout_ms),
                     "--auto-commit-interval-ms", str(auto_commit_interval_ms),
                     "--max-poll-records", str(max_poll_records)]
        if instance_id:
            self.args += ["--instance-id", instance_id]
        self.process: subprocess.Popen | None = None

    def start(self) -> "MemberProcess":
        err = open(self.log_path.with_suffix(".stderr"), "wb")
        self.process = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        return self

    # -- the log --------------------------------------------------------------------------

    def events(self) -> list[dict]:
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def assignment(self) -> set[int]:
        """The partitions this member owns according to its callbacks."""
        owned: set[int] = set()
        for event in self.events():
            if event["ev"] == "assign":
                owned |= set(event["tps"])
            elif event["ev"] == "revoke":
                owned -= set(event["tps"])
        return owned

    def consumed(self) -> list[tuple[int, int]]:
        return [tuple(r) for e in self.events() if e["ev"] == "records" for r in e["recs"]]

    def stderr(self) -> str:
        try:
            return self.log_path.with_suffix(".stderr").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # -- control --------------------------------------------------------------------------

    def send(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()

    def close(self, timeout_s: float = 15.0) -> None:
        """Ask the member to close (commit, on_revoke, leave) and wait for it to exit 0."""
        self.send("close")
        code = self.process.wait(timeout_s)
        assert code == 0, f"member exited with {code}: {self.stderr()}"

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL if still running (a stopped process dies too); waits."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(15)


# -- the member itself ------------------------------------------------------------------------

class _Log:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        line = json.dumps({"ev": event, "t": time.monotonic(), **fields})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _read_commands(commands: queue.Queue) -> None:
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("close")  # the test went away: end as well


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("log")
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--auto-commit-interval-ms", type=int, default=200)
    parser.add_argument("--max-poll-records", type=int, default=50)
    args = parser.parse_args()

    from logd_sdk import Consumer, LogdError, TopicPartition

    log = _Log(args.log)
    log.write("start", pid=os.getpid())
    consumer = Consumer(args.bootstrap, group_id=args.group, auto_offset_reset="earliest",
                        session_timeout_ms=args.session_timeout_ms, group_instance_id=args.instance_id,
                        auto_commit_interval_ms=args.auto_commit_interval_ms, max_poll_records=args.max_poll_records)
    consumer.subscribe([args.topic],
                       on_assign=lambda tps: log.write("assign", tps=sorted(tp.partition for tp in tps)),
                       on_revoke=lambda tps: log.write("revoke", tps=sorted(tp.partition for tp in tps)))
    commands: queue.Queue = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
    last_read: dict[int, int] = {}
    while True:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            command = None
        if command == "close":
            consumer.close()
            log.write("closed")
            return 0
        if command == "commit-last":
            offsets = {TopicPartition(args.topic, p): o + 1 for p, o in last_read.items()}
            try:
                consumer.commit(offsets)
                log.write("commit", offsets=sorted([p, o] for p, o in last_read.items()), ok=True, error=None)
            except LogdError as exc:
                log.write("commit", offsets=sorted([p, o] for p, o in last_read.items()), ok=False,
                          error=type(exc).__name__)
        try:
            records = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        except LogdError as exc:
            log.write("error", error=type(exc).__name__, message=str(exc))
            time.sleep(0.1)  # back off before polling again: errors here are sticky
            continue
        if records:
            log.write("records", recs=[[r.partition, r.offset] for r in records])
            for record in records:
                last_read[record.partition] = record.offset


if __name__ == "__main__":
    sys.exit(main())
