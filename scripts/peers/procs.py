"""Server processes for the comparison: start in a temp dir, wait until ready, stop by PID.

Each server runs as a child of this script in its own session (``start_new_session``),
so its process group id is its PID. Stopping sends SIGTERM to that PID, waits up to a
deadline, then SIGKILLs the group; whatever the server itself forked (RabbitMQ's
``erl_child_setup``) is in that group and goes with it. Nothing else is ever signalled.
Output goes to ``<name>.log`` in the work dir; its tail is quoted when a start fails.

Thread safety: a :class:`ServerProcess` is driven by one thread.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


class SkipSystem(Exception):
    """This system cannot be measured here (no binary, no client, did not start); says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_binary(name: str, package: str) -> str:
    """The path of an executable, or SkipSystem naming the Debian package to install."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/lib/rabbitmq/bin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path is None:
        raise SkipSystem(f"{name} not found (apt-get install -y {package})")
    return path


def require_module(module: str, pip_name: str) -> None:
    """SkipSystem unless a Python client module imports."""
    try:
        __import__(module)
    except ImportError as exc:
        raise SkipSystem(f"Python client {module!r} missing ({exc}); pip install {pip_name!r} "
                         "(or python -m pip install -e '.[bench]')") from exc


class ServerProcess:
    """One server child process: ``start``, ``wait_ready``, ``stop`` (idempotent)."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env)
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> float:
        """Poll ``ready()`` until it is true; returns the seconds taken.

        Raises SkipSystem if the process exits first or ``timeout_s`` passes (with the
        log's tail). Exceptions from ``ready`` count as "not yet".
        """
        assert self.process is not None, "start() first"
        started = time.monotonic()
        deadline = started + timeout_s
        last_error = ""
        while True:
            code = self.process.poll()
            if code is not None:
                raise SkipSystem(f"{self.name} exited with code {code} while starting; "
                                 f"log tail:\n{self.log_tail()}")
            try:
                if ready():
                    return time.monotonic() - started
            except Exception as exc:  # not ready yet, whatever the client says
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                self.stop()
                raise SkipSystem(f"{self.name} not ready within {timeout_s:.0f} s"
                                 f"{' (last error: ' + last_error + ')' if last_error else ''}; "
                                 f"log tail:\n{self.log_tail()}")
            time.sleep(poll_s)  # polling a server's readiness: there is no event to wait on

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the PID, SIGKILL its process group after ``timeout_s``; reaps the child."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(process.pid)
        process.wait()

    @staticmethod
    def _kill_group(pgid: int) -> None:
        # The group id is the child's PID (start_new_session); signal only if members remain.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])
