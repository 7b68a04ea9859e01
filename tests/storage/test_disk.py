"""Every form a full disk takes is recognised as one; a bare write failure only when space is really low."""

import errno
import sqlite3

import pytest

from storage import disk


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    Exception("No space left on device (os error 28)"),  # safetensors' Rust error
    RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                 "\"No space left on device\" })"),
])
def test_every_no_space_error_is_a_full_disk(error):
    assert disk.is_disk_full(error)


def test_a_wrapped_no_space_error_is_found_through_its_cause():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("checkpoint failed") from inner
    except RuntimeError as outer:
        assert disk.is_disk_full(outer)


@pytest.mark.parametrize("text", ["basic_ios::clear: iostream error", "[enforce fail at inline_container.cc:672] . "
                                  "unexpected pos 64 vs 0", "PytorchStreamWriter failed writing file data/0"])
def test_a_bare_write_failure_counts_only_when_space_is_low(text, tmp_path, monkeypatch):
    error = RuntimeError(text)
    assert not disk.is_disk_full(error)  # no path: nothing to judge by
    monkeypatch.setattr(disk, "free_bytes", lambda path: 10 * 1024 * 1024 * 1024)
    assert not disk.is_disk_full(error, tmp_path)
    monkeypatch.setattr(disk, "free_bytes", lambda path: 700 * 1024)
    assert disk.is_disk_full(error, tmp_path)


def test_other_errors_are_not_a_full_disk(tmp_path):
    assert not disk.is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not disk.is_disk_full(sqlite3.OperationalError("database is locked"), tmp_path)


def test_refusing_early_names_both_figures(tmp_path):
    with pytest.raises(disk.DiskFullError) as refused:
        disk.check_free_space(tmp_path, 10**18, "this training job")
    assert "too full for this training job" in str(refused.value) and "is free" in str(refused.value)
    assert refused.value.errno == errno.ENOSPC and disk.is_disk_full(refused.value)


def test_a_storage_failure_is_one_line(tmp_path):
    assert "disk is full" in disk.storage_failure(sqlite3.OperationalError("database or disk is full"), tmp_path)
    line = disk.storage_failure(sqlite3.DatabaseError("database disk image is malformed"), tmp_path)
    assert "./run-bot verify" in line and "\n" not in line
