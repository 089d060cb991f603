"""gan.files: the one write-then-rename helper, and the checkpoint hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gan.files import atomic_write, file_sha256


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "index.npz"
    atomic_write(path, lambda tmp: np.savez(tmp, a=np.arange(3)), suffix=".npz")
    assert list(np.load(path)["a"]) == [0, 1, 2]  # numpy wrote the very file it was given

    def half_then_crash(tmp):
        tmp.write_bytes(b"half a fi")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_crash)
    assert list(np.load(path)["a"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]


def test_bytes_go_into_a_new_folder(tmp_path):
    path = atomic_write(tmp_path / "new" / "next.json", b'{"seed": 3}')
    assert path.read_bytes() == b'{"seed": 3}'
    assert [p.name for p in path.parent.iterdir()] == ["next.json"]


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
