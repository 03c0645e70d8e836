"""Fixtures: a real BrokerServer on a free loopback port with a temporary data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import connect, start_server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path):
    server = start_server(data_dir)
    yield server
    server.stop()


@pytest.fixture
def client(server):
    client = connect(server)
    yield client
    client.channel.close()
