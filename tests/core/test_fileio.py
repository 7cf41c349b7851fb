"""fileio.write_atomic: whole or absent, normal permissions, nothing left behind on failure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from pipesim.fileio import write_atomic


def test_writes_text_bytes_and_a_writer(tmp_path: Path) -> None:
    write_atomic(str(tmp_path / "a.txt"), "é\n")
    write_atomic(str(tmp_path / "b.bin"), b"\x00\x01")

    def writer(fh: BinaryIO) -> None:
        fh.write(b"streamed")

    write_atomic(str(tmp_path / "c.bin"), writer)
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.bin").read_bytes() == b"streamed"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "keep.txt"
    write_atomic(str(path), "old")

    def broken(fh: BinaryIO) -> None:
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(str(path), broken)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "nope" / "x.txt"), "x")
