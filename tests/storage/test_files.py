import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import files
from storage.files import FileStore, UnsafePathError


def test_write_read_and_hash(store: FileStore):
    rel = files.photo_crop_key(7, 3, "ab" * 32)
    store.write_bytes(rel, b"pixels")
    assert store.read_bytes(rel) == b"pixels"
    assert store.size(rel) == 6
    assert store.list_files() == [rel]


def test_overwrite_is_atomic_and_leaves_no_temp_files(store: FileStore):
    rel = files.export_key(1, 2)
    store.write_bytes(rel, b"old")
    store.write_bytes(rel, b"new")
    assert store.read_bytes(rel) == b"new"
    assert [p.name for p in store.resolve(rel).parent.iterdir()] == ["2.zip"]


def test_disk_full_leaves_neither_a_truncated_file_nor_a_temp_file(store: FileStore, monkeypatch):
    rel = files.photo_crop_key(1, 1, "cd" * 32)
    store.write_bytes(rel, b"complete old copy")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        store.write_bytes(rel, b"x" * 10_000)
    monkeypatch.undo()
    assert store.read_bytes(rel) == b"complete old copy"
    assert store.list_files() == [rel]
    assert not [p for p in store.root.rglob("*") if ".tmp-" in p.name]


def test_writing_dir_replaces_a_whole_directory(store: FileStore):
    rel = files.adapter_root(5, 9)
    with store.writing_dir(rel) as temp:
        (temp / "pytorch_lora_weights.safetensors").write_bytes(b"v1")
    with store.writing_dir(rel) as temp:
        (temp / "pytorch_lora_weights.safetensors").write_bytes(b"v2")
    assert store.list_files() == [f"{rel}/pytorch_lora_weights.safetensors"]
    assert store.read_bytes(f"{rel}/pytorch_lora_weights.safetensors") == b"v2"


def test_failed_directory_write_leaves_nothing(store: FileStore):
    rel = files.adapter_root(5, 10)
    with pytest.raises(RuntimeError):
        with store.writing_dir(rel) as temp:
            (temp / "half").write_bytes(b"...")
            raise RuntimeError("trainer crashed")
    assert store.list_files() == []


def test_delete_is_idempotent(store: FileStore):
    rel = files.user_root(3)
    store.write_bytes(files.generation_root(3, 1) + "/0.png", b"img")
    store.delete(rel)
    store.delete(rel)
    assert store.list_files() == []


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs", "users/../../x", "a//b", "", ".hidden", "a/./b",
                                 "users/1/photo name.png", "users/1/\u0000", "users/1/é.png"])
def test_unsafe_paths_are_rejected(store: FileStore, bad: str):
    with pytest.raises(UnsafePathError):
        store.resolve(bad)


@given(st.text(max_size=40))
def test_keys_refuse_anything_but_ids_and_digests(text):
    with pytest.raises(UnsafePathError):
        files.photo_original_key(1, 1, text if not files._HEX.match(text) else "zz", "png")
    with pytest.raises(UnsafePathError):
        files.photo_original_key(1, 1, "ab" * 32, text if text not in files.IMAGE_EXTENSIONS else "exe")


def test_keys_refuse_negative_and_non_integer_ids():
    for bad in (-1, "1", 1.5, True):
        with pytest.raises(UnsafePathError):
            files.user_root(bad)


def test_sweep_removes_stale_temp_files(store: FileStore):
    stale = store.root / "users" / ".x.tmp-deadbeef"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a crash")
    os.utime(stale, (0, 0))
    assert store.sweep_temp_files(older_than_s=60) == 1
    assert not stale.exists()
