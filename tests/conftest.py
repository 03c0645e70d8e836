"""Fixtures shared by every test directory, and the import root of the shared test helpers.

This file being here (tests/ has no ``__init__.py``) makes pytest put tests/ on
``sys.path`` before any test module is imported, in every run, whichever directories it
is given: so modules at the top of tests/ (``broker_process``: a real ``logd serve``
subprocess) and the helpers of each suite (``server.helpers``) import by name from any
test directory.
"""

from __future__ import annotations

import pytest

from broker_process import BrokerProcess
from server.helpers import connect


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real ``logd serve`` subprocess (``broker_process.BrokerProcess``) for the whole
    test module; a directory or module may define its own ``broker`` instead."""
    root = tmp_path_factory.mktemp("broker")
    process = BrokerProcess(root / "data", root / "broker.log").start()
    try:
        yield process
    finally:
        process.stop()
        process.kill()


@pytest.fixture
def client(server):
    """Raw gRPC stubs (``server.helpers.Client``) to the ``server`` fixture of the test's
    directory or module (an in-process BrokerServer); the channel is closed afterwards."""
    client = connect(server)
    yield client
    client.channel.close()
