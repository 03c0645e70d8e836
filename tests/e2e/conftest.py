"""Fixtures of the end-to-end tests, beside ``broker`` (tests/conftest.py: a real ``logd
serve`` subprocess per test module).

See ``tests/broker_process.py`` (``BrokerProcess``): started as ``python -m logd.cli serve``
on a free port with a temp data dir, ready when grpc.health.v1 reports SERVING, stopped by PID.
"""

from __future__ import annotations

import re
import time

import pytest

from logd_sdk import Admin


@pytest.fixture(scope="module")
def admin(broker):
    """An SDK Admin client of the module's broker."""
    with Admin(broker.address) as client:
        yield client


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to the test (not created)."""
    name = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:200]
    return f"{name}-{time.monotonic_ns() % 10**9}"
