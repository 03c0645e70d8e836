"""Fixtures and options of the reliability suite (tests/reliability).

Profiles: the default *short* profile keeps the whole directory near a minute and a
half; ``--reliability-long`` (or env ``LOGD_RELIABILITY_ITERATIONS=N``) runs more
crash-loop iterations, more crash-point hits and more power cuts.

(The option is registered by this conftest, so pass it with this directory on the
command line: ``python -m pytest tests/reliability --reliability-long``; the env
variable works from anywhere.)

Seeds: every randomised test takes the ``seed`` fixture: env ``LOGD_RELIABILITY_SEED``
when set (to replay a failure), else a fresh random one; it is printed in the failure
report ("reliability seed") so that a failing run can be replayed exactly.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

SHORT_ITERATIONS = 3
LONG_ITERATIONS = 40


def pytest_addoption(parser):
    parser.addoption("--reliability-long", action="store_true", default=False,
                     help="run the reliability suite's long profile (more crashes and faults)")


class Profile:
    """How much of each scenario to run."""

    def __init__(self, long: bool, iterations: int) -> None:
        self.long = long
        #: crash-loop kills (broker SIGKILLed and restarted this many times)
        self.iterations = iterations
        self._long_hits = long
        #: power cuts per flush policy in the power-loss test
        self.power_cuts = 500 if long else 40
        #: examples per hypothesis fuzz test
        self.fuzz_examples = 1500 if long else 150


    def crash_point_hits(self, point: str) -> tuple[int, ...]:
        """Which hits of ``point`` to crash at (1: the first time it is reached). The
        checkpoint and metadata points are first reached while a fresh broker starts
        (creating ``__consumer_offsets``), so a later hit is added to reach them with data."""
        later = {"checkpoint": 8, "metadata": 4}.get(point.split(".")[0])
        if self._long_hits:
            return tuple(range(1, 13)) if later else (1, 2, 3)
        return (1, later) if later else (1,)


@pytest.fixture(scope="session")
def profile(pytestconfig) -> Profile:
    long = bool(pytestconfig.getoption("--reliability-long", default=False))
    env = os.environ.get("LOGD_RELIABILITY_ITERATIONS")
    iterations = int(env) if env else (LONG_ITERATIONS if long else SHORT_ITERATIONS)
    return Profile(long or bool(env), iterations)


@pytest.fixture
def seed(request) -> int:
    """The test's random seed (see the module docstring)."""
    env = os.environ.get("LOGD_RELIABILITY_SEED")
    value = int(env) if env else random.SystemRandom().randrange(1 << 32)
    request.node.reliability_seed = value
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    value = getattr(item, "reliability_seed", None)
    if value is not None and report.failed:
        report.sections.append(("reliability seed", f"replay with LOGD_RELIABILITY_SEED={value}"))


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs mounted for the test (skips when mounting is impossible); always unmounted."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
