"""Fixtures: a real BrokerServer on a free loopback port with a temporary data dir.

``client`` (raw stubs to ``server``) is in tests/conftest.py, shared with tests/ops.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import start_server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path):
    server = start_server(data_dir)
    yield server
    server.stop()
