"""docs/architecture.md §Writing files: a file appears whole or not at all, and nothing temporary is
left behind when a writer fails."""
import os
import stat

import pytest

from openpose_train.common import files
from openpose_train.common.files import StagedFiles, atomic_path, write_atomic, write_atomic_bytes


def test_write_atomic_writes_and_replaces(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "one\n")
    write_atomic(path, "two\n", fsync=True)
    write_atomic_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert path.read_text() == "two\n" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]
    assert stat.S_IMODE(path.stat().st_mode) == files.DEFAULT_MODE
    write_atomic(path, "x", mode=0o755)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_a_failing_writer_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    seen = []
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_path(path) as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"half")
            raise RuntimeError("writer broke")
    assert seen[0].parent == tmp_path and seen[0].suffix == ".png"     # the extension kept for cv2.imwrite
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_a_full_disk_during_the_write_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        write_atomic(tmp_path / "m.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with StagedFiles() as staged:
            staged.stage(tmp_path / "a.caffemodel").write_bytes(b"a")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    finished = tmp_path / "scratch.bin"
    finished.write_bytes(b"c")
    with StagedFiles(fsync=True) as staged:
        staged.stage(tmp_path / "a.caffemodel").write_bytes(b"a")
        staged.adopt(finished, tmp_path / "c.bin")
        staged.stage(tmp_path / "a.solverstate").write_bytes(b"s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.caffemodel", "a.solverstate", "c.bin"]
    assert (tmp_path / "c.bin").read_bytes() == b"c"


def test_an_adopted_file_stays_when_the_set_fails(tmp_path):
    finished = tmp_path / "scratch.bin"
    finished.write_bytes(b"c")
    with pytest.raises(ValueError):
        with StagedFiles() as staged:
            staged.adopt(finished, tmp_path / "c.bin")
            staged.stage(tmp_path / "a.solverstate")
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["scratch.bin"]
    assert os.path.exists(finished)
