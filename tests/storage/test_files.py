"""The file-system seam's own logic: pwritev's buffer bookkeeping and the sync call per file type."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from logd.storage import files
from logd.storage.files import FileSystem


def _read_all(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


@settings(max_examples=60, deadline=None)
@given(buffers=st.lists(st.binary(max_size=300), max_size=40), position=st.integers(0, 5000),
       short_write=st.integers(1, 700))
def test_pwritev_writes_the_concatenation_through_short_writes(tmp_path_factory, buffers, position, short_write):
    """Whatever the kernel writes per call, the file ends up as one pwrite of the join."""
    path = tmp_path_factory.mktemp("pwritev") / "f"
    real_pwritev = os.pwritev

    calls = []

    def stingy_pwritev(fd, chunk, offset):  # writes at most ``short_write`` bytes per call
        calls.append(offset)
        assert len(calls) <= sum(map(len, buffers)) + 1, "pwritev keeps writing: the loop lost track"
        joined = b"".join(bytes(view) for view in chunk)[:short_write]
        return real_pwritev(fd, [joined], offset) if joined else 0

    fs = FileSystem()
    fd = fs.open(path, os.O_RDWR | os.O_CREAT)
    try:
        with mock.patch.object(files.os, "pwritev", stingy_pwritev):
            fs.pwritev(fd, buffers, position)
    finally:
        fs.close(fd)
    expected = b"".join(buffers)
    data = _read_all(path)
    assert data[position:] == expected
    assert len(data) == (position + len(expected) if expected else 0)


def test_pwritev_splits_more_buffers_than_the_kernel_takes_at_once(tmp_path):
    buffers = [bytes([i % 251]) * (i % 7 + 1) for i in range(3 * files._IOV_MAX + 5)]
    fs = FileSystem()
    fd = fs.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        fs.pwritev(fd, buffers, 10)
    finally:
        fs.close(fd)
    assert _read_all(tmp_path / "f")[10:] == b"".join(buffers)


def test_pwritev_goes_through_an_overridden_pwrite(tmp_path):
    """A test's faulty file system intercepts pwrite: it sees the joined bytes."""
    seen = []

    class Recording(FileSystem):
        def pwrite(self, fd, data, position):
            seen.append((bytes(data), position))
            super().pwrite(fd, data, position)

    fs = Recording()
    fd = fs.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        fs.pwritev(fd, [b"ab", memoryview(b"cde")[1:]], 3)
    finally:
        fs.close(fd)
    assert seen == [(b"abde", 3)]


@pytest.mark.skipif(not hasattr(os, "fdatasync"), reason="no fdatasync on this platform")
def test_files_get_fdatasync_and_directories_fsync(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(files.os, "fdatasync", lambda fd: calls.append("fdatasync"))
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync"))
    fs = FileSystem()
    fd = fs.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        fs.fsync(fd)
    finally:
        fs.close(fd)
    fs.fsync_dir(tmp_path)
    assert calls == ["fdatasync", "fsync"]
